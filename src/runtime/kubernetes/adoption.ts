/**
 * Adoption at `open`: the replica groups a previous runtime left in the namespace (objects labelled
 * `app.kubernetes.io/managed-by=ferry`). The runtime keeps their pods for its adoption grace, so a
 * control-plane restart takes no endpoint down (see index.ts).
 */
import type { AppsV1Api, CoreV1Api, KubernetesObject, NetworkingV1Api, PolicyV1Api } from '@kubernetes/client-node';
import { LABEL_GROUP, MANAGED_BY, type Group } from './objects.js';

export interface KubeApis {
  core: CoreV1Api;
  apps: AppsV1Api;
  networking: NetworkingV1Api;
  policy: PolicyV1Api;
}

/** The group of each Ferry object in the namespace (Deployments, Services, NetworkPolicies, PDBs), in that order; a group may repeat. */
export async function listLeftGroups(api: KubeApis, ns: string): Promise<Group[]> {
  const selector = `${MANAGED_BY}=ferry`;
  const [deployments, services, policies, budgets] = await Promise.all([
    api.apps.listNamespacedDeployment({ namespace: ns, labelSelector: selector }),
    api.core.listNamespacedService({ namespace: ns, labelSelector: selector }),
    api.networking.listNamespacedNetworkPolicy({ namespace: ns, labelSelector: selector }),
    api.policy.listNamespacedPodDisruptionBudget({ namespace: ns, labelSelector: selector }),
  ]);
  const objects: KubernetesObject[] = [...deployments.items, ...services.items, ...policies.items, ...budgets.items];
  const groups: Group[] = [];
  for (const o of objects) {
    const name = o.metadata?.labels?.[LABEL_GROUP];
    if (name !== undefined) groups.push({ name, labels: o.metadata?.labels ?? {}, selector: { [MANAGED_BY]: 'ferry', [LABEL_GROUP]: name } });
  }
  return groups;
}
