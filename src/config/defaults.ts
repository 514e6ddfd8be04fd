/**
 * Server defaults that other planes share (the replica, the HTTP layer), in a leaf module: reading
 * one loads no schema library and no artifact store.
 *
 * JSON shape and row limits, also the defaults of processes that get no config (a replica started
 * by hand). 64 levels is twice what any tensor input needs (numpy stops at 32); 4,194,304 values
 * is what a 16 MiB body (maxBodySize) of short numbers holds at about 4 bytes each; 100,000 rows
 * is far past any useful batch and bounds what one request can make a model allocate.
 */
export const DEFAULT_MAX_JSON_DEPTH = 64;
export const DEFAULT_MAX_JSON_ELEMENTS = 4_194_304;
export const DEFAULT_MAX_ROWS_PER_REQUEST = 100_000;
