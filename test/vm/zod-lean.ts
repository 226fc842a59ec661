/**
 * zod for the guest bundles (test/vm/update.ts aliases `zod` to this file): the same
 * functions, only those luokit calls. luokit imports zod as a namespace (`import { z } from
 * 'zod'`), which no bundler can tree-shake, so each bundle carried all of zod (about 730 KB
 * of luod's 1.1 MB). Under TCG, Node compiles every byte of a bundle before it runs a line,
 * and that was seconds of luod's start in the next kernel, inside the VMs' blackout.
 * test/vm/blackout.test.ts checks that every `z.<name>` used in src/ is here.
 */
import {
  array,
  boolean,
  discriminatedUnion,
  enum as enumOf,
  literal,
  number,
  object,
  record,
  string,
  union,
  unknown,
  ZodError,
} from '../../node_modules/zod/v4/classic/external.js';

export const z = {
  array,
  boolean,
  discriminatedUnion,
  enum: enumOf,
  literal,
  number,
  object,
  record,
  string,
  union,
  unknown,
  ZodError,
};
