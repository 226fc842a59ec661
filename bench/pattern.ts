/** The benchmarks' data pattern lives with the example VMM, which fills guest RAM with it. */
export * from '../src/example-vmm/pattern.js';
