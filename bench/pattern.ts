/** The benchmarks' data pattern lives with the example VMM, which fills guest RAM with it. */
export * from '../src/client/pattern.js';
