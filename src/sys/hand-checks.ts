/**
 * The checks the hand-written fast paths of luokit's files and hot commands
 * share (the update record, record/format.ts; the state carried across a
 * kexec, daemon/handover-state.ts; luod's state file, daemon/restart-state.ts;
 * the id owners file, daemon/id-owners.ts; SUBSCRIBE, READY and CLAIM,
 * protocol/messages.ts). Each answers as the zod piece named beside it
 * does, on anything a JSON file or a record in memory can hold: a fast path
 * built from them spares luod a cold zod parse of a valid file, and leaves
 * everything else to the schema, the validator of record, which words the
 * error (docs/performance.md).
 */

/** `z.object()`'s input: any object but an array (unknown keys are then dropped). */
export const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** `z.number()` (zod 4 refuses NaN and the infinities). */
export const isFiniteNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** `z.number().int().nonnegative()` (zod 4's int is a safe integer). */
export const isNonnegativeInt = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/**
 * `z.array(item)`, with `item` the hand check of one element: a copy, or
 * undefined when any element fails. Indexed, so that a hole (undefined) is
 * checked as zod checks it.
 */
export function arrayOf<T>(v: unknown, item: (e: unknown) => T | undefined): T[] | undefined {
  if (!Array.isArray(v)) return undefined;
  const out: T[] = new Array(v.length);
  for (let i = 0; i < v.length; i++) {
    const e = item(v[i]);
    if (e === undefined) return undefined;
    out[i] = e;
  }
  return out;
}

const aString = (s: unknown) => (typeof s === 'string' ? s : undefined);

/** `z.array(z.string())`: a copy, or undefined. */
export const stringArray = (v: unknown): string[] | undefined => arrayOf(v, aString);

/**
 * Whether zod keeps an optional key in what it returns: when the value is
 * defined, or when the input has the key at all (`{ failed: undefined }`
 * stays so; an absent key stays absent).
 */
export const keepsOptional = (input: object, key: string, value: unknown): boolean =>
  value !== undefined || key in input;
