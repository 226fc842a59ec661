/**
 * A value built the first time it is used, for module-level constants that
 * cost to build and that a command may never touch: luokit's zod schemas
 * (protocol, update record, luod's state files). Every luoctl command and luod
 * load those modules at start; with each schema behind onFirstUse, zod
 * itself is not even initialised until something is parsed (in the bundles,
 * scripts/bundle.mjs loads it on first use too; docs/performance.md).
 *
 * The result is a stand-in with the built value's type: reading, writing or
 * testing any property builds the value once and forwards to it, so callers
 * use it as the value itself (`Schema.parse(x)`, `Schema.shape`,
 * `Schema.optional()`, `z.infer<typeof Schema>`). Its identity is its own:
 * compare the values it gives, not the stand-in.
 */
export function onFirstUse<T extends object>(build: () => T): T {
  let value: T | undefined;
  const real = (): T => {
    value ??= build();
    return value;
  };
  return new Proxy({} as T, {
    get: (_, key) => Reflect.get(real(), key),
    set: (_, key, v) => Reflect.set(real(), key, v),
    has: (_, key) => Reflect.has(real(), key),
    ownKeys: () => Reflect.ownKeys(real()),
    getOwnPropertyDescriptor: (_, key) => {
      const descriptor = Reflect.getOwnPropertyDescriptor(real(), key);
      // A proxy may not report as non-configurable what its own target lacks.
      return descriptor && { ...descriptor, configurable: true };
    },
    getPrototypeOf: () => Reflect.getPrototypeOf(real()),
  });
}
