/** The identity, token, permission and audit APIs' shapes (Databricks' names). */

export type PrincipalType = 'USER' | 'SERVICE_PRINCIPAL';

/** `GET /api/2.0/me`, `GET /api/2.0/principals[/{name}]`. */
export interface Principal {
  name: string;
  type: PrincipalType;
  admin: boolean;
  creation_time: number;
  created_by: string;
}

/** The body of `POST /api/2.0/principals`. */
export interface CreatePrincipalRequest {
  name: string;
  /** Default USER. */
  type?: PrincipalType | undefined;
  /** Default false. */
  admin?: boolean | undefined;
}

/** The body of `PATCH /api/2.0/principals/{name}`. */
export interface UpdatePrincipalRequest {
  admin: boolean;
}

/** `GET /api/2.0/principals`. */
export interface ListPrincipalsResponse {
  principals: Principal[];
}

export interface TokenInfo {
  token_id: string;
  owner: string;
  creation_time: number;
  /** -1: never expires. */
  expiry_time: number;
  comment: string;
}

/** The body of `POST /api/2.0/token/create` (and, with `principal`, of the on-behalf-of route). */
export interface CreateTokenRequest {
  /** Default 90 days; 60 s to two years. */
  lifetime_seconds?: number | undefined;
  comment?: string | undefined;
}

/** The body of `POST /api/2.0/token-management/on-behalf-of/tokens` (admins): a token for `principal`. */
export interface CreateTokenOnBehalfRequest extends CreateTokenRequest {
  principal: string;
}

/** The body of `POST /api/2.0/token/delete`. */
export interface RevokeTokenRequest {
  token_id: string;
}

/** `GET /api/2.0/token/list` and `GET /api/2.0/token-management/tokens`: never the secrets. */
export interface ListTokensResponse {
  token_infos: TokenInfo[];
}

/** The answer of a token creation: the token itself is shown this once. */
export interface CreateTokenResponse {
  token_value: string;
  token_info: TokenInfo;
}

export type PermissionLevel = 'CAN_VIEW' | 'CAN_QUERY' | 'CAN_MANAGE' | 'CAN_READ' | 'CAN_EDIT';

/** One entry of a PUT/PATCH access control list: exactly one of the three names. */
export interface AccessControlEntry {
  user_name?: string | undefined;
  service_principal_name?: string | undefined;
  group_name?: string | undefined;
  permission_level: string;
}

/** The body of `PUT` (these grants and no others) and `PATCH` (add or change these grants) on a permissions route. */
export interface SetPermissionsRequest {
  access_control_list: AccessControlEntry[];
}

/** `GET/PUT/PATCH /api/2.0/permissions/{serving-endpoints|registered-models|experiments}/{id}`. */
export interface ObjectPermissions {
  object_id: string;
  object_type: string;
  access_control_list: Array<{
    user_name?: string;
    service_principal_name?: string;
    group_name?: string;
    all_permissions: Array<{ permission_level: string; inherited: boolean; inherited_from_object?: string[] }>;
  }>;
}

/** `GET .../permissions/{type}/{id}/me`: the caller's own level on the object; null for none. */
export interface MyPermissionResponse {
  permission_level: PermissionLevel | null;
}

/** `GET .../permissions/{type}/{id}/permissionLevels`: the levels one can grant on the object, lowest first. */
export interface PermissionLevelsResponse {
  permission_levels: Array<{ permission_level: PermissionLevel; description: string }>;
}

/** One row of `GET /api/2.0/audit-log`. */
export interface AuditEntry {
  id: number;
  timestamp: number;
  principal: string;
  source_address: string;
  method: string;
  path: string;
  action: string;
  status: number;
  error_code?: string;
  /** How many calls the row stands for, when more than one (unauthenticated calls over the per-minute cap). */
  count?: number;
}

/** `GET /api/2.0/audit-log`: newest first; `next_page_token` is absent on the last page. */
export interface AuditLogResponse {
  entries: AuditEntry[];
  next_page_token?: string;
}
