/**
 * zod's parse, tiered as V8 tiers code: the first parses with a schema run
 * zod's interpreter, later ones its compiled fast path.
 *
 * zod compiles a fast path for each object schema (`new Function`) the first
 * time it parses with it. That pays for a schema parsed thousands of times
 * (luod's commands, with a thousand VMMs), and is a loss for one parsed a few
 * times in a process: luoctl's one reply, the state carried across a kexec,
 * the state file, an update record. 5 to 10 ms per schema on a host, and
 * 0.2 s of luod's restore after a kexec in the real-kernel bench (TCG), on
 * every VM's blackout. Both paths validate the same; only speed differs.
 */

/** Parses before a schema gets zod's compiled fast path. */
const INTERPRETED_PARSES = 16;
const JITLESS = { jitless: true } as const;

/** How many times each schema was parsed, up to INTERPRETED_PARSES. */
const parses = new WeakMap<object, number>();

interface SafeParser<R> {
  safeParse(value: unknown, params?: { jitless?: boolean }): R;
}

/** schema.safeParse(value), interpreted for the schema's first parses, compiled after. */
export function tieredSafeParse<R>(schema: SafeParser<R>, value: unknown): R {
  const count = parses.get(schema) ?? 0;
  if (count >= INTERPRETED_PARSES) return schema.safeParse(value);
  parses.set(schema, count + 1);
  return schema.safeParse(value, JITLESS);
}
