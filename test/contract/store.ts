/**
 * The metadata-store contract: every MetadataStore implementation runs this suite
 * (SQLite now; Postgres later with the same file).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { MetadataStore, ModelOrder, VersionArtifact } from '../../src/store/index.js';
import { rejectsWith } from '../support/index.js';

export interface StoreHarness {
  open(): Promise<MetadataStore>;
  cleanup(): Promise<void>;
}

const artifact: VersionArtifact = {
  path: 'models/m/1', flavor: 'onnx', modelFile: 'model.onnx',
  signature: { inputs: [{ name: 'x', dtype: 'float32', shape: [-1, 4] }], outputs: [{ name: 'y', dtype: 'float32', shape: [-1, 1] }] },
  inputExample: { inputs: [[1, 2, 3, 4]] }, sha256: 'ab'.repeat(32), sizeBytes: 123,
};

const BY_NAME: ModelOrder = { by: 'name', descending: false };

export function storeContract(name: string, makeHarness: () => Promise<StoreHarness>): void {
  describe(`MetadataStore contract: ${name}`, () => {
    const withStore = (title: string, fn: (s: MetadataStore) => Promise<void>): void => {
      test(title, async () => {
        const h = await makeHarness();
        const s = await h.open();
        try {
          await fn(s);
        } finally {
          await s.close();
          await h.cleanup();
        }
      });
    };

    withStore('registered model create/get/update/delete with tags', async (s) => {
      const m = await s.createRegisteredModel({ name: 'iris', description: 'd', tags: { team: 'ml' } }, 1000);
      assert.deepEqual(m, { name: 'iris', description: 'd', createdMs: 1000, updatedMs: 1000, tags: { team: 'ml' }, aliases: {} });
      await rejectsWith(s.createRegisteredModel({ name: 'iris', description: '', tags: {} }, 1001), 'RESOURCE_ALREADY_EXISTS');
      assert.equal((await s.updateRegisteredModel('iris', { description: 'new' }, 2000)).description, 'new');
      await s.setRegisteredModelTag('iris', 'team', 'ds', 2001);
      await s.setRegisteredModelTag('iris', 'stage', 'prod', 2002);
      assert.deepEqual((await s.getRegisteredModel('iris'))?.tags, { stage: 'prod', team: 'ds' });
      await s.deleteRegisteredModelTag('iris', 'stage', 2003);
      assert.deepEqual((await s.getRegisteredModel('iris'))?.tags, { team: 'ds' });
      assert.equal((await s.getRegisteredModel('iris'))?.updatedMs, 2003);
      await rejectsWith(s.updateRegisteredModel('nope', { description: '' }, 1), 'RESOURCE_DOES_NOT_EXIST');
      assert.equal(await s.getRegisteredModel('nope'), undefined);
    });

    withStore('search pages are keyset pages: each starts after the last row shown, in every order, whatever changes between pages', async (s) => {
      // Updated at 10, 20, 30 (twice: ties are broken by name), 40, 50.
      for (const [n, ms] of [['m1', 10], ['m2', 20], ['m3', 30], ['m4', 30], ['m5', 40], ['m6', 50]] as const) await s.createRegisteredModel({ name: n, description: '', tags: {} }, ms);
      const NAME: ModelOrder = { by: 'name', descending: false };
      const NAME_DESC: ModelOrder = { by: 'name', descending: true };
      const UPDATED: ModelOrder = { by: 'updated', descending: true };
      const UPDATED_ASC: ModelOrder = { by: 'updated', descending: false };
      const walk = async (order: ModelOrder, between?: (page: number) => Promise<void>): Promise<string[]> => {
        const seen: string[] = [];
        let token: string | undefined;
        for (let page = 0; page < 10; page++) {
          const r = await s.searchRegisteredModels({}, order, { maxResults: 2, pageToken: token });
          seen.push(...r.items.map((m) => m.name));
          token = r.nextPageToken;
          if (token === undefined) break;
          await between?.(page);
        }
        return seen;
      };
      assert.deepEqual(await walk(NAME), ['m1', 'm2', 'm3', 'm4', 'm5', 'm6']);
      assert.deepEqual(await walk(NAME_DESC), ['m6', 'm5', 'm4', 'm3', 'm2', 'm1']);
      assert.deepEqual(await walk(UPDATED), ['m6', 'm5', 'm3', 'm4', 'm2', 'm1']);
      assert.deepEqual(await walk(UPDATED_ASC), ['m1', 'm2', 'm3', 'm4', 'm5', 'm6']);
      // A model created before the cursor, and one deleted after it, between two pages: an offset
      // would show m2 twice and skip a model; a keyset page neither repeats nor skips.
      assert.deepEqual(await walk(NAME, async (page) => {
        if (page !== 0) return;
        await s.createRegisteredModel({ name: 'm0', description: '', tags: {} }, 60);
        await s.deleteRegisteredModel('m5');
      }), ['m1', 'm2', 'm3', 'm4', 'm6']);
      for (let v = 0; v < 5; v++) await s.createModelVersion({ name: v < 3 ? 'm1' : 'm2', source: `/${v}`, runId: '', description: '', tags: {} }, 1);
      const versions: string[] = [];
      let token: string | undefined;
      do {
        const r = await s.searchModelVersions({}, { maxResults: 2, pageToken: token });
        versions.push(...r.items.map((v) => `${v.name}/${v.version}`));
        token = r.nextPageToken;
      } while (token !== undefined);
      assert.deepEqual(versions, ['m1/3', 'm1/2', 'm1/1', 'm2/2', 'm2/1']);
      // A token of one order is no token of another; a forged one is refused.
      const byName = (await s.searchRegisteredModels({}, NAME, { maxResults: 1, pageToken: undefined })).nextPageToken;
      await rejectsWith(s.searchRegisteredModels({}, UPDATED, { maxResults: 1, pageToken: byName }), 'INVALID_PARAMETER_VALUE');
      await rejectsWith(s.searchRegisteredModels({}, NAME, { maxResults: 1, pageToken: Buffer.from('after:[1]').toString('base64url') }), 'INVALID_PARAMETER_VALUE');
      await rejectsWith(s.searchModelVersions({}, { maxResults: 1, pageToken: Buffer.from('offset:2').toString('base64url') }), 'INVALID_PARAMETER_VALUE');
    });

    withStore('versions are numbered from 1 and never reused after a delete', async (s) => {
      await s.createRegisteredModel({ name: 'm', description: '', tags: {} }, 1);
      const v1 = await s.createModelVersion({ name: 'm', source: '/a', runId: 'r', description: '', tags: { k: 'v' } }, 2);
      const v2 = await s.createModelVersion({ name: 'm', source: '/b', runId: '', description: '', tags: {} }, 3);
      assert.equal(v1.version, 1);
      assert.equal(v2.version, 2);
      assert.equal(v1.status, 'PENDING_REGISTRATION');
      assert.deepEqual(v1.tags, { k: 'v' });
      await s.deleteModelVersion('m', 2);
      const v3 = await s.createModelVersion({ name: 'm', source: '/c', runId: '', description: '', tags: {} }, 4);
      assert.equal(v3.version, 3);
      assert.equal((await s.latestModelVersion('m'))?.version, 3);
      await rejectsWith(s.createModelVersion({ name: 'ghost', source: '/x', runId: '', description: '', tags: {} }, 5), 'RESOURCE_DOES_NOT_EXIST');
    });

    withStore('bulk registration: READY versions in one transaction, missing models created for their creator, all or none', async (s) => {
      await s.createRegisteredModel({ name: 'old', description: '', tags: {} }, 1);
      await s.createModelVersion({ name: 'old', source: '/a', runId: '', description: '', tags: {} }, 2);
      const at = (path: string): VersionArtifact => ({ ...artifact, path });
      const versions = await s.createReadyModelVersions([
        { name: 'old', source: 'bulk:old.onnx', artifact: at('models/old/b1'), creator: 'alice' },
        { name: 'new', source: 'bulk:new.onnx', artifact: at('models/new/b2'), creator: 'alice' },
        { name: 'new', source: 'bulk:new2.onnx', artifact: at('models/new/b3'), creator: 'alice' },
      ], 10);
      assert.deepEqual(versions, [2, 1, 2]);
      const v = await s.getModelVersion('new', 2);
      assert.equal(v?.status, 'READY');
      assert.deepEqual(v?.artifact, at('models/new/b3'));
      assert.equal(v?.source, 'bulk:new2.onnx');
      assert.deepEqual(await s.getGrants('registered-model', 'new'), [{ grantee: 'alice', level: 'CAN_MANAGE' }]);
      assert.deepEqual(await s.getGrants('registered-model', 'old'), [], 'an existing model keeps its grants');
      // A bad row (NOT NULL source) rolls back the whole batch, the models it created included.
      await assert.rejects(s.createReadyModelVersions([
        { name: 'new', source: 'bulk:x', artifact: at('models/new/b4') },
        { name: 'other', source: null as unknown as string, artifact: at('models/other/b5') },
      ], 11));
      assert.equal((await s.latestModelVersion('new'))?.version, 2);
      assert.equal(await s.getRegisteredModel('other'), undefined);
    });

    withStore('bulk registration for a caller who is not an admin: an existing model takes a version only from one of its editors, checked in the transaction', async (s) => {
      // 'taken' appeared after mallory's permission check: another user created it, with grants of its own.
      await s.createRegisteredModel({ name: 'taken', description: '', tags: {}, creator: 'alice' }, 1);
      await s.createRegisteredModel({ name: 'shared', description: '', tags: {} }, 1);
      await s.setGrants('registered-model', 'shared', [{ grantee: 'group:users', level: 'CAN_EDIT' }]);
      await s.createRegisteredModel({ name: 'readable', description: '', tags: {} }, 1);
      await s.setGrants('registered-model', 'readable', [{ grantee: 'mallory', level: 'CAN_READ' }]);
      const at = (path: string): VersionArtifact => ({ ...artifact, path });
      const editors = ['mallory', 'group:users'];
      const versions = await s.createReadyModelVersions([
        { name: 'taken', source: 'bulk:a', artifact: at('models/taken/b1'), creator: 'mallory', editors },
        { name: 'fresh', source: 'bulk:b', artifact: at('models/fresh/b2'), creator: 'mallory', editors },
        { name: 'shared', source: 'bulk:c', artifact: at('models/shared/b3'), creator: 'mallory', editors },
        { name: 'readable', source: 'bulk:d', artifact: at('models/readable/b4'), creator: 'mallory', editors },
      ], 10);
      assert.deepEqual(versions, [undefined, 1, 1, undefined]);
      assert.equal(await s.latestModelVersion('taken'), undefined, 'nothing written to the model someone else created');
      assert.deepEqual(await s.getGrants('registered-model', 'taken'), [{ grantee: 'alice', level: 'CAN_MANAGE' }]);
      assert.equal(await s.latestModelVersion('readable'), undefined);
      assert.deepEqual(await s.getGrants('registered-model', 'fresh'), [{ grantee: 'mallory', level: 'CAN_MANAGE' }]);
      // Alice may edit her model: her entry goes in.
      assert.deepEqual(await s.createReadyModelVersions([{ name: 'taken', source: 'bulk:e', artifact: at('models/taken/b5'), creator: 'alice', editors: ['alice', 'group:users'] }], 11), [1]);
    });

    withStore('artifactPathInUse: whether any version\'s artifact path starts with a prefix (LIKE wildcards in it are plain characters)', async (s) => {
      const at = (path: string): VersionArtifact => ({ ...artifact, path });
      await s.createReadyModelVersions([
        { name: 'a', source: 'bulk:a', artifact: at('packs/p1/0-5-model.onnx') },
        { name: 'b', source: 'bulk:b', artifact: at('packs/p1/5-7-model.ubj') },
        { name: 'c', source: 'bulk:c', artifact: at('packs/p_x/0-1-model.onnx') },
      ], 10);
      assert.equal(await s.artifactPathInUse('packs/p1/'), true);
      assert.equal(await s.artifactPathInUse('packs/p/'), false, 'a prefix of the pack id is not the pack');
      assert.equal(await s.artifactPathInUse('packs/p%/'), false, '% is not a wildcard');
      assert.equal(await s.artifactPathInUse('packs/p_1/'), false, '_ is not a wildcard');
      assert.equal(await s.artifactPathInUse('packs/p_x/'), true);
      await s.deleteModelVersion('a', 1);
      assert.equal(await s.artifactPathInUse('packs/p1/'), true);
      await s.deleteRegisteredModel('b');
      assert.equal(await s.artifactPathInUse('packs/p1/'), false);
    });

    withStore('version update stores the artifact and status', async (s) => {
      await s.createRegisteredModel({ name: 'm', description: '', tags: {} }, 1);
      await s.createModelVersion({ name: 'm', source: '/a', runId: '', description: '', tags: {} }, 2);
      assert.deepEqual((await s.pendingModelVersions()).map((v) => v.version), [1]);
      const ready = await s.updateModelVersion('m', 1, { status: 'READY', artifact }, 3);
      assert.equal(ready.status, 'READY');
      assert.deepEqual(ready.artifact, artifact);
      assert.deepEqual(await s.pendingModelVersions(), []);
      const described = await s.updateModelVersion('m', 1, { description: 'hello' }, 4);
      assert.deepEqual(described.artifact, artifact, 'a patch without artifact keeps it');
      assert.equal(described.description, 'hello');
      const failed = await s.updateModelVersion('m', 1, { status: 'FAILED_REGISTRATION', statusMessage: 'bad' }, 5);
      assert.equal(failed.statusMessage, 'bad');
      await rejectsWith(s.updateModelVersion('m', 9, { description: '' }, 6), 'RESOURCE_DOES_NOT_EXIST');
    });

    withStore('aliases point at versions and go away with them', async (s) => {
      await s.createRegisteredModel({ name: 'm', description: '', tags: {} }, 1);
      await s.createModelVersion({ name: 'm', source: '/a', runId: '', description: '', tags: {} }, 2);
      await s.createModelVersion({ name: 'm', source: '/b', runId: '', description: '', tags: {} }, 3);
      await s.setAlias('m', 'champion', 1, 4);
      await s.setAlias('m', 'champion', 2, 5);
      await s.setAlias('m', 'old', 1, 6);
      assert.deepEqual((await s.getRegisteredModel('m'))?.aliases, { champion: 2, old: 1 });
      await rejectsWith(s.setAlias('m', 'x', 7, 7), 'RESOURCE_DOES_NOT_EXIST');
      await s.deleteModelVersion('m', 1);
      assert.deepEqual((await s.getRegisteredModel('m'))?.aliases, { champion: 2 });
      assert.equal(await s.deleteAlias('m', 'champion', 8), true);
      assert.equal(await s.deleteAlias('m', 'champion', 9), false);
    });

    withStore('deleting a model deletes its versions, tags and aliases', async (s) => {
      await s.createRegisteredModel({ name: 'm', description: '', tags: { a: 'b' } }, 1);
      await s.createModelVersion({ name: 'm', source: '/a', runId: '', description: '', tags: { t: '1' } }, 2);
      await s.setAlias('m', 'champion', 1, 3);
      const deleted = await s.deleteRegisteredModel('m');
      assert.deepEqual(deleted.map((v) => v.version), [1]);
      assert.equal(await s.getRegisteredModel('m'), undefined);
      assert.equal(await s.getModelVersion('m', 1), undefined);
      await s.createRegisteredModel({ name: 'm', description: '', tags: {} }, 4);
      assert.deepEqual((await s.getRegisteredModel('m'))?.tags, {});
      assert.equal((await s.createModelVersion({ name: 'm', source: '/a', runId: '', description: '', tags: {} }, 5)).version, 1);
    });

    withStore('search filters and paginates', async (s) => {
      for (const n of ['alpha', 'beta', 'Alphonse', 'gamma', 'alpine']) await s.createRegisteredModel({ name: n, description: '', tags: n.startsWith('al') ? { kind: 'a' } : {} }, 1);
      const all = await s.searchRegisteredModels({}, BY_NAME, { maxResults: 2, pageToken: undefined });
      assert.deepEqual(all.items.map((m) => m.name), ['Alphonse', 'alpha']);
      const page2 = await s.searchRegisteredModels({}, BY_NAME, { maxResults: 2, pageToken: all.nextPageToken });
      assert.deepEqual(page2.items.map((m) => m.name), ['alpine', 'beta']);
      const page3 = await s.searchRegisteredModels({}, BY_NAME, { maxResults: 2, pageToken: page2.nextPageToken });
      assert.deepEqual(page3.items.map((m) => m.name), ['gamma']);
      assert.equal(page3.nextPageToken, undefined);
      const like = await s.searchRegisteredModels({ name: { op: 'LIKE', value: 'al%' } }, BY_NAME, { maxResults: 10, pageToken: undefined });
      assert.deepEqual(like.items.map((m) => m.name), ['alpha', 'alpine'], 'LIKE is case-sensitive');
      const ilike = await s.searchRegisteredModels({ name: { op: 'ILIKE', value: 'al%' } }, BY_NAME, { maxResults: 10, pageToken: undefined });
      assert.deepEqual(ilike.items.map((m) => m.name), ['Alphonse', 'alpha', 'alpine']);
      const eq = await s.searchRegisteredModels({ name: { op: '=', value: 'beta' } }, BY_NAME, { maxResults: 10, pageToken: undefined });
      assert.deepEqual(eq.items.map((m) => m.name), ['beta']);
      const tagged = await s.searchRegisteredModels({ tags: [{ key: 'kind', value: 'a' }] }, BY_NAME, { maxResults: 10, pageToken: undefined });
      assert.deepEqual(tagged.items.map((m) => m.name), ['alpha', 'alpine']);
      await s.createModelVersion({ name: 'beta', source: '/1', runId: 'r1', description: '', tags: {} }, 1);
      await s.createModelVersion({ name: 'beta', source: '/2', runId: 'r2', description: '', tags: { x: 'y' } }, 1);
      const versions = await s.searchModelVersions({ name: { op: '=', value: 'beta' } }, { maxResults: 10, pageToken: undefined });
      assert.deepEqual(versions.items.map((v) => v.version), [2, 1]);
      assert.deepEqual((await s.searchModelVersions({ runId: 'r1' }, { maxResults: 10, pageToken: undefined })).items.map((v) => v.version), [1]);
      assert.deepEqual((await s.searchModelVersions({ tags: [{ key: 'x', value: 'y' }] }, { maxResults: 10, pageToken: undefined })).items.map((v) => v.version), [2]);
      await rejectsWith(s.searchRegisteredModels({}, BY_NAME, { maxResults: 1, pageToken: '!!' }), 'INVALID_PARAMETER_VALUE');
    });

    withStore('tokens are found by hash and honour expiry fields', async (s) => {
      await s.putToken({ id: 't1', principal: 'admin', hash: 'h1', createdMs: 1, expiresMs: undefined, description: 'd' });
      await s.putToken({ id: 't2', principal: 'bob', hash: 'h2', createdMs: 1, expiresMs: 99, description: '' });
      assert.equal((await s.findTokenByHash('h1'))?.principal, 'admin');
      assert.equal((await s.findTokenByHash('h2'))?.expiresMs, 99);
      await s.putToken({ id: 't1', principal: 'admin', hash: 'h3', createdMs: 2, expiresMs: undefined, description: 'rotated' });
      assert.equal(await s.findTokenByHash('h1'), undefined, 'replacing a token by id invalidates the old secret');
      await s.deleteTokensOf('bob');
      assert.equal(await s.findTokenByHash('h2'), undefined);
    });

    withStore('tokens: list per principal, delete one', async (s) => {
      await s.putToken({ id: 'a1', principal: 'alice', hash: 'ha1', createdMs: 1, expiresMs: 100, description: 'ci' });
      await s.putToken({ id: 'a2', principal: 'alice', hash: 'ha2', createdMs: 2, expiresMs: undefined, description: '' });
      await s.putToken({ id: 'b1', principal: 'bob', hash: 'hb1', createdMs: 3, expiresMs: undefined, description: '' });
      assert.deepEqual((await s.listTokens('alice')).map((t) => t.id), ['a1', 'a2']);
      assert.deepEqual((await s.listTokens()).map((t) => t.id), ['a1', 'a2', 'b1']);
      assert.equal((await s.deleteToken('a1'))?.principal, 'alice');
      assert.equal(await s.deleteToken('a1'), undefined);
      assert.equal(await s.findTokenByHash('ha1'), undefined);
    });

    withStore('principals: create, list, promote, delete takes their tokens and grants', async (s) => {
      await s.createPrincipal({ name: 'alice', kind: 'user', admin: false, createdMs: 1, createdBy: 'admin' });
      await s.createPrincipal({ name: 'ci', kind: 'service_principal', admin: false, createdMs: 2, createdBy: 'admin' });
      await rejectsWith(s.createPrincipal({ name: 'alice', kind: 'user', admin: true, createdMs: 3, createdBy: 'admin' }), 'RESOURCE_ALREADY_EXISTS');
      assert.deepEqual((await s.listPrincipals()).map((p) => [p.name, p.kind]), [['alice', 'user'], ['ci', 'service_principal']]);
      assert.equal((await s.setPrincipalAdmin('alice', true)).admin, true);
      assert.equal((await s.getPrincipal('alice'))?.admin, true);
      await rejectsWith(s.setPrincipalAdmin('nobody', true), 'RESOURCE_DOES_NOT_EXIST');
      await s.putToken({ id: 't', principal: 'alice', hash: 'h', createdMs: 1, expiresMs: undefined, description: '' });
      await s.setGrants('serving-endpoint', 'ep', [{ grantee: 'alice', level: 'CAN_QUERY' }, { grantee: 'ci', level: 'CAN_MANAGE' }]);
      assert.equal(await s.deletePrincipal('alice'), true);
      assert.equal(await s.deletePrincipal('alice'), false);
      assert.equal(await s.findTokenByHash('h'), undefined);
      assert.deepEqual(await s.getGrants('serving-endpoint', 'ep'), [{ grantee: 'ci', level: 'CAN_MANAGE' }]);
    });

    withStore('grants: replace per object, look up by grantee, creators manage, deletes forget', async (s) => {
      await s.setGrants('serving-endpoint', 'a', [{ grantee: 'bob', level: 'CAN_VIEW' }, { grantee: 'group:users', level: 'CAN_QUERY' }]);
      await s.setGrants('registered-model', 'a', [{ grantee: 'bob', level: 'CAN_EDIT' }]);
      await s.setGrants('serving-endpoint', 'b', [{ grantee: 'carol', level: 'CAN_MANAGE' }]);
      assert.deepEqual(await s.getGrants('serving-endpoint', 'a'), [{ grantee: 'bob', level: 'CAN_VIEW' }, { grantee: 'group:users', level: 'CAN_QUERY' }]);
      const ofBob = await s.grantsOf('serving-endpoint', ['bob', 'group:users']);
      assert.deepEqual([...ofBob.keys()], ['a']);
      assert.equal(ofBob.get('a')?.length, 2);
      await s.setGrants('serving-endpoint', 'a', [{ grantee: 'bob', level: 'CAN_MANAGE' }]);
      assert.deepEqual(await s.getGrants('serving-endpoint', 'a'), [{ grantee: 'bob', level: 'CAN_MANAGE' }]);

      await s.createRegisteredModel({ name: 'm', description: '', tags: {}, creator: 'dave' }, 1);
      assert.deepEqual(await s.getGrants('registered-model', 'm'), [{ grantee: 'dave', level: 'CAN_MANAGE' }]);
      await s.deleteRegisteredModel('m');
      assert.deepEqual(await s.getGrants('registered-model', 'm'), [], 'a model created again under the same name starts without old grants');
      await s.createEndpoint({
        name: 'ep', id: 'i', creator: 'erin', createdMs: 1, updatedMs: 1, description: '', tags: {},
        config: undefined, pendingConfig: undefined, configUpdate: 'NOT_UPDATING', updateMessage: '', aiGateway: {},
      });
      assert.deepEqual(await s.getGrants('serving-endpoint', 'ep'), [{ grantee: 'erin', level: 'CAN_MANAGE' }]);
      await s.deleteEndpoint('ep');
      assert.deepEqual(await s.getGrants('serving-endpoint', 'ep'), []);
    });

    withStore('audit log: appended, newest first, filtered and paged', async (s) => {
      for (let i = 1; i <= 5; i++) {
        await s.appendAudit({ timeMs: i * 10, principal: i % 2 ? 'alice' : 'bob', sourceAddress: '127.0.0.1', method: 'POST', path: `/p/${i}`, action: 'POST /p/:n', status: 200, errorCode: '', count: 1 });
      }
      const page1 = await s.searchAudit({ maxResults: 2, pageToken: undefined });
      assert.deepEqual(page1.items.map((e) => e.path), ['/p/5', '/p/4']);
      const page2 = await s.searchAudit({ maxResults: 2, pageToken: page1.nextPageToken });
      assert.deepEqual(page2.items.map((e) => e.path), ['/p/3', '/p/2']);
      const page3 = await s.searchAudit({ maxResults: 2, pageToken: page2.nextPageToken });
      assert.deepEqual(page3.items.map((e) => e.path), ['/p/1']);
      assert.equal(page3.nextPageToken, undefined);
      assert.deepEqual((await s.searchAudit({ maxResults: 10, pageToken: undefined, principal: 'bob' })).items.map((e) => e.path), ['/p/4', '/p/2']);
      assert.deepEqual((await s.searchAudit({ maxResults: 10, pageToken: undefined, sinceMs: 40 })).items.map((e) => e.path), ['/p/5', '/p/4']);
      assert.deepEqual(Object.keys(page3.items[0] ?? {}).sort(), ['action', 'count', 'errorCode', 'id', 'method', 'path', 'principal', 'sourceAddress', 'status', 'timeMs']);
    });

    withStore('audit log: rows written ahead get their outcome; aggregated rows keep their count; retention deletes by time', async (s) => {
      const ahead = await s.appendAudit({ timeMs: 100, principal: 'alice', sourceAddress: '::1', method: 'DELETE', path: '/e', action: 'DELETE /e', status: 0, errorCode: '', count: 1 });
      const summary = await s.appendAudit({ timeMs: 200, principal: '', sourceAddress: '', method: '*', path: '', action: 'anonymous', status: 401, errorCode: 'UNAUTHENTICATED', count: 1234 });
      assert.ok(summary > ahead);
      await s.finishAudit(ahead, 403, 'PERMISSION_DENIED');
      const rows = (await s.searchAudit({ maxResults: 10, pageToken: undefined })).items;
      assert.deepEqual(rows.map((r) => [r.id, r.status, r.errorCode, r.count]), [[summary, 401, 'UNAUTHENTICATED', 1234], [ahead, 403, 'PERMISSION_DENIED', 1]]);
      assert.equal(await s.deleteAuditBefore(200), 1);
      assert.deepEqual((await s.searchAudit({ maxResults: 10, pageToken: undefined })).items.map((r) => r.id), [summary]);
      assert.equal(await s.deleteAuditBefore(200), 0);
    });

    withStore('endpoints: create, get, list, replace, delete', async (s) => {
      const e = {
        name: 'ep', id: 'id-1', creator: 'admin', createdMs: 1, updatedMs: 1, description: '', tags: { a: 'b' },
        config: undefined, pendingConfig: { configVersion: 1, entities: ['x'] }, configUpdate: 'IN_PROGRESS' as const, updateMessage: '',
        aiGateway: { fallback: true },
      };
      await s.createEndpoint(e);
      await rejectsWith(s.createEndpoint({ ...e, id: 'id-2' }), 'RESOURCE_ALREADY_EXISTS');
      assert.deepEqual(await s.getEndpoint('ep'), e);
      const done = { ...e, config: e.pendingConfig, pendingConfig: undefined, configUpdate: 'NOT_UPDATING' as const, updatedMs: 2 };
      await s.putEndpoint(done);
      assert.deepEqual(await s.getEndpoint('ep'), done);
      await s.createEndpoint({ ...e, name: 'another', id: 'id-3' });
      assert.deepEqual((await s.listEndpoints()).map((x) => x.name), ['another', 'ep']);
      await rejectsWith(s.putEndpoint({ ...e, name: 'ghost' }), 'RESOURCE_DOES_NOT_EXIST');
      assert.equal(await s.deleteEndpoint('ep'), true);
      assert.equal(await s.deleteEndpoint('ep'), false);
      assert.equal(await s.getEndpoint('ep'), undefined);
    });

    withStore('gateway load: one row per server, replaced by its next report; reports older than a cut-off deleted', async (s) => {
      assert.deepEqual(await s.listGatewayLoad(), []);
      const load = (endpoint: string, concurrency: number, queued: number) => ({ endpoint, servedEntity: 'a', concurrency, queued });
      await s.putGatewayLoad({ server: 'ferry-b', reportedMs: 1_700_000_000_000, entities: [load('lin', 2.5, 0), load('iris', 0.125, 3)] });
      await s.putGatewayLoad({ server: 'ferry-c', reportedMs: 1_700_000_000_500, entities: [] });
      await s.putGatewayLoad({ server: 'ferry-b', reportedMs: 1_700_000_001_000, entities: [load('lin', 1.75, 1)] });
      assert.deepEqual(await s.listGatewayLoad(), [
        { server: 'ferry-b', reportedMs: 1_700_000_001_000, entities: [load('lin', 1.75, 1)] },
        { server: 'ferry-c', reportedMs: 1_700_000_000_500, entities: [] },
      ]);
      assert.equal(await s.deleteGatewayLoad(1_700_000_000_501), 1, 'only ferry-c\'s report is older');
      assert.deepEqual((await s.listGatewayLoad()).map((r) => r.server), ['ferry-b']);
      assert.equal(await s.deleteGatewayLoad(1_700_000_000_501), 0);
    });

    withStore('search orders by name or last update, either way', async (s) => {
      for (const [n, t] of [['b', 3], ['a', 1], ['c', 2]] as const) await s.createRegisteredModel({ name: n, description: '', tags: {} }, t);
      const names = async (order: ModelOrder): Promise<string[]> => (await s.searchRegisteredModels({}, order, { maxResults: 10, pageToken: undefined })).items.map((m) => m.name);
      assert.deepEqual(await names({ by: 'name', descending: true }), ['c', 'b', 'a']);
      assert.deepEqual(await names({ by: 'updated', descending: false }), ['a', 'c', 'b']);
      assert.deepEqual(await names({ by: 'updated', descending: true }), ['b', 'c', 'a']);
    });

    withStore('rename moves versions, tags, aliases, stages and grants to the new name', async (s) => {
      await s.createRegisteredModel({ name: 'old', description: 'd', tags: { k: 'v' }, creator: 'alice' }, 1);
      await s.createModelVersion({ name: 'old', source: '/1', runId: 'r', description: '', tags: { vt: '1' } }, 2);
      await s.createModelVersion({ name: 'old', source: '/2', runId: '', description: '', tags: {} }, 3);
      await s.updateModelVersion('old', 2, { status: 'READY', artifact, stage: 'Production' }, 4);
      await s.setAlias('old', 'champion', 2, 5);
      await s.createRegisteredModel({ name: 'taken', description: '', tags: {} }, 1);
      await rejectsWith(s.renameRegisteredModel('old', 'taken', 6), 'RESOURCE_ALREADY_EXISTS');
      await rejectsWith(s.renameRegisteredModel('missing', 'x', 6), 'RESOURCE_DOES_NOT_EXIST');
      const m = await s.renameRegisteredModel('old', 'new', 7);
      assert.deepEqual(m, { name: 'new', description: 'd', createdMs: 1, updatedMs: 7, tags: { k: 'v' }, aliases: { champion: 2 } });
      assert.equal(await s.getRegisteredModel('old'), undefined);
      assert.deepEqual((await s.getModelVersion('new', 1))?.tags, { vt: '1' });
      const v2 = await s.getModelVersion('new', 2);
      assert.equal(v2?.stage, 'Production');
      assert.deepEqual(v2?.artifact, artifact, 'artifact paths are kept');
      assert.deepEqual(await s.getGrants('registered-model', 'new'), [{ grantee: 'alice', level: 'CAN_MANAGE' }]);
      assert.deepEqual(await s.getGrants('registered-model', 'old'), []);
      assert.equal((await s.createModelVersion({ name: 'new', source: '/3', runId: '', description: '', tags: {} }, 8)).version, 3, 'version numbers continue');
    });

    withStore('tracking: experiments with the Default one, unique names, lifecycle, tags and the creator\'s grant', async (s) => {
      const t = s.tracking;
      assert.deepEqual((await t.getExperiment('0'))?.name, 'Default');
      assert.deepEqual(await s.getGrants('experiment', '0'), [{ grantee: 'group:users', level: 'CAN_EDIT' }]);
      const e = await t.createExperiment({ name: 'churn', tags: { team: 'ml' }, creator: 'alice' }, 10);
      assert.deepEqual(e, { id: '1', name: 'churn', lifecycleStage: 'active', createdMs: 10, updatedMs: 10, tags: { team: 'ml' } });
      assert.deepEqual(await s.getGrants('experiment', '1'), [{ grantee: 'alice', level: 'CAN_MANAGE' }]);
      await rejectsWith(t.createExperiment({ name: 'churn', tags: {} }, 11), 'RESOURCE_ALREADY_EXISTS');
      assert.equal((await t.getExperimentByName('churn'))?.id, '1');
      assert.equal(await t.getExperimentByName('nope'), undefined);
      assert.equal(await t.getExperiment('x'), undefined);
      await t.createExperiment({ name: 'other', tags: {} }, 12);
      await rejectsWith(t.updateExperiment('1', { name: 'other' }, 13), 'RESOURCE_ALREADY_EXISTS');
      assert.equal((await t.updateExperiment('1', { name: 'churn2' }, 14)).name, 'churn2');
      assert.equal((await t.updateExperiment('1', { lifecycleStage: 'deleted' }, 15)).lifecycleStage, 'deleted');
      await t.setExperimentTag('1', 'team', 'ops', 16);
      const got = await t.getExperiment('1');
      assert.deepEqual([got?.tags, got?.updatedMs], [{ team: 'ops' }, 16]);
      assert.deepEqual((await t.listExperiments()).map((x) => x.name), ['Default', 'churn2', 'other']);
      await rejectsWith(t.setExperimentTag('99', 'k', 'v', 1), 'RESOURCE_DOES_NOT_EXIST');
    });

    withStore('tracking: runs log params (immutable), tags, metric history and latest values, inputs; listed per experiment', async (s) => {
      const t = s.tracking;
      const e = await t.createExperiment({ name: 'exp', tags: {} }, 1);
      const id = 'a'.repeat(32);
      const r = await t.createRun({ id, experimentId: e.id, name: 'r1', userId: 'alice', startMs: 100, tags: { 'mlflow.user': 'alice' } });
      assert.deepEqual(r, {
        id, experimentId: e.id, name: 'r1', userId: 'alice', status: 'RUNNING', startMs: 100, endMs: undefined, lifecycleStage: 'active',
        params: {}, tags: { 'mlflow.user': 'alice' }, metrics: [], inputs: [],
      });
      await rejectsWith(t.createRun({ id: 'b'.repeat(32), experimentId: '77', name: '', userId: '', startMs: 1, tags: {} }), 'RESOURCE_DOES_NOT_EXIST');
      await t.logRunData(id, {
        params: [{ key: 'alpha', value: '0.5' }], tags: [{ key: 'k', value: 'v' }],
        metrics: [{ key: 'loss', value: 0.9, timestampMs: 1, step: 0 }, { key: 'loss', value: 0.5, timestampMs: 2, step: 2 }, { key: 'loss', value: 0.7, timestampMs: 3, step: 1 }],
      });
      await t.logRunData(id, { params: [{ key: 'alpha', value: '0.5' }], tags: [], metrics: [] });
      await rejectsWith(t.logRunData(id, { params: [{ key: 'beta', value: '1' }, { key: 'alpha', value: '0.6' }], tags: [], metrics: [] }), 'INVALID_PARAMETER_VALUE');
      const got = await t.getRun(id);
      assert.deepEqual(got?.params, { alpha: '0.5' }, 'a refused batch writes nothing');
      assert.deepEqual(got?.metrics, [{ key: 'loss', value: 0.5, timestampMs: 2, step: 2 }], 'latest = highest step');
      assert.deepEqual((await t.metricHistory(id, 'loss')).map((m) => [m.step, m.value]), [[0, 0.9], [1, 0.7], [2, 0.5]]);
      await t.deleteRunTag(id, 'k');
      await rejectsWith(t.deleteRunTag(id, 'k'), 'RESOURCE_DOES_NOT_EXIST');
      await t.logRunInputs(id, [{ dataset: { name: 'd', digest: 'x' }, tags: [] }]);
      const done = await t.updateRun(id, { status: 'FINISHED', endMs: 200 });
      assert.deepEqual([done.status, done.endMs, done.inputs], ['FINISHED', 200, [{ dataset: { name: 'd', digest: 'x' }, tags: [] }]]);
      await t.createRun({ id: 'c'.repeat(32), experimentId: e.id, name: 'r2', userId: 'bob', startMs: 300, tags: {} });
      await t.updateRun('c'.repeat(32), { lifecycleStage: 'deleted' });
      const runs = await t.listRuns([e.id, '0', 'not-a-number']);
      assert.deepEqual(runs.map((x) => [x.name, x.lifecycleStage]), [['r2', 'deleted'], ['r1', 'active']], 'newest first');
      assert.deepEqual(runs[1]?.metrics.map((m) => m.key), ['loss']);
      assert.deepEqual(await t.listRuns([]), []);
      await t.updateExperiment(e.id, { lifecycleStage: 'deleted' }, 5);
      await rejectsWith(t.createRun({ id: 'd'.repeat(32), experimentId: e.id, name: '', userId: '', startMs: 1, tags: {} }), 'INVALID_PARAMETER_VALUE');
      await rejectsWith(t.metricHistory('e'.repeat(32), 'loss'), 'RESOURCE_DOES_NOT_EXIST');
    });

    test('data survives close and reopen', async () => {
      const h = await makeHarness();
      try {
        const s1 = await h.open();
        await s1.createRegisteredModel({ name: 'keep', description: 'x', tags: {} }, 1);
        await s1.close();
        const s2 = await h.open();
        assert.equal((await s2.getRegisteredModel('keep'))?.description, 'x');
        await s2.close();
      } finally {
        await h.cleanup();
      }
    });
  });
}
