/**
 * Until a command installs its own SIGTERM/SIGINT handlers (which drain), a signal exits at once.
 * Without any handler a container's pid 1 ignores SIGTERM, so a pod stopped while its server or
 * replica is still starting (fetching, loading a model) would wait out its whole grace period.
 */
const exitNow = (): void => process.exit(143);

/** Called first by every entry (`ferry …` and `ferry replica`). */
export function exitOnStopSignals(): void {
  process.on('SIGTERM', exitNow);
  process.on('SIGINT', exitNow);
}

/** Replaces `exitNow` with the command's own handler. */
export function onStopSignals(stop: () => void): void {
  process.off('SIGTERM', exitNow);
  process.off('SIGINT', exitNow);
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
