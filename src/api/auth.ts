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
  type?: PrincipalType;
  admin?: boolean;
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
  lifetime_seconds?: number;
  comment?: string;
}

/** The answer of a token creation: the token itself is shown this once. */
export interface CreateTokenResponse {
  token_value: string;
  token_info: TokenInfo;
}

export type PermissionLevel = 'CAN_VIEW' | 'CAN_QUERY' | 'CAN_MANAGE' | 'CAN_READ' | 'CAN_EDIT';

/** One entry of a PUT/PATCH access control list: exactly one of the three names. */
export interface AccessControlEntry {
  user_name?: string;
  service_principal_name?: string;
  group_name?: string;
  permission_level: string;
}

/** `GET/PUT/PATCH /api/2.0/permissions/{serving-endpoints|registered-models}/{id}`. */
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
}
