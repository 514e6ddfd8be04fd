import type { z } from 'zod';

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

/**
 * `RequestFits` for a module's schemas at once: `Apis` maps keys of `Schemas` to the request type
 * each schema parses, and each key's type is `true` when the two agree. So
 * `const fits: SchemasFit<{ alias: SetAliasRequest }, typeof schemas> = { alias: true }` fails to
 * compile, at that key, on a drift.
 */
export type SchemasFit<Apis, Schemas extends { [K in keyof Apis]: z.ZodTypeAny }> = { [K in keyof Apis]: RequestFits<Apis[K], z.input<Schemas[K]>> };
