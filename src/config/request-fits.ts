/**
 * A compile-time check that a request type declared in `src/api` and the input of the zod schema
 * that parses it agree: each is assignable to the other, and both have the same top-level keys
 * (assignability alone would let one side lack an optional key). `true` when they agree, else
 * `false`, so `const fits: RequestFits<A, z.input<typeof s>> = true` fails to compile on a drift.
 *
 * Example: `RequestFits<{ name: string; admin?: boolean | undefined }, { name: string }>` is
 * `false`: the API declares `admin`, which the schema does not parse.
 */
export type RequestFits<Api, SchemaInput> =
  [Api] extends [SchemaInput]
    ? [SchemaInput] extends [Api]
      ? [keyof Api] extends [keyof SchemaInput]
        ? [keyof SchemaInput] extends [keyof Api] ? true : false
        : false
      : false
    : false;
