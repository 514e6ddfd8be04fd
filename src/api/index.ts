/**
 * Ferry's REST shapes, declared once: the server's views are typed by them, and the typed client
 * (`ferry/client`) and the web console import them. No Node imports here (the console runs in a
 * browser): only types and plain constants.
 */
export * from './serving-endpoints.js';
export * from './registry.js';
export * from './auth.js';
export * from './simulate.js';
export * from './tracking.js';
export * from './metrics.js';
export * from './inference-tables.js';
