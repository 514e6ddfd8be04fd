/**
 * Security of the API: who is calling (tokens, principals), what they may do (access rules on
 * every route, per-object grants) and what they did (the audit log). See docs/security.md.
 */
export { ADMIN_PRINCIPAL, ADMIN_TOKEN_FILE, TOKEN_PREFIX, bearerToken, bootstrapAdminToken, generateToken, hashToken } from './tokens.js';
export {
  access, authenticate, authorize, Authorizer, identityOf, isDataPlane, OBJECT_LEVELS, USERS_GROUP,
  type Access, type EndpointLevel, type Identity, type Level, type ModelLevel, type NameOf, type ServerRouter,
} from './access.js';
export { authRoutes, type AuthApiOptions } from './api.js';
export { ANONYMOUS_PATH_CHARS, AuditTrail, auditRoutes, type AuditOptions } from './audit.js';
