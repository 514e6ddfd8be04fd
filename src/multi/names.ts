/** Model and version name rules shared by the registry, the gateway and family replicas (a leaf module). */

/** A registered model's name: 1-128 letters, digits, ".", "_" or "-", starting with a letter or digit (the registry's rule). */
export const MODEL_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** A version number as text: 1 to 9,999,999,999, no leading zero. */
export const VERSION_PATTERN = /^[1-9]\d{0,9}$/;
