/** Tar archives read as streams (ferry models import, bulk registration bodies) and written in memory. */
export { readTar, TarError, type TarFilter } from './read.js';
export { TAR_END, tarEntry, tarEntryBytes } from './write.js';
