/**
 * What the registry tells observers, on node:diagnostics_channel (a leaf module: importing the
 * name loads nothing else). The control plane's alias follower subscribes.
 */
export const ALIAS_SET_CHANNEL = 'ferry:registry:alias-set';

/** An alias was set or moved: `model@alias` now names `version`. */
export interface AliasSetEvent {
  model: string;
  alias: string;
  version: number;
}
