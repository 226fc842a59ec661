/**
 * `luod --require-qualified DIR` (docs/qualify.md): the gate's second question, after "does
 * the next kernel read what this kernel writes?": "has this pair been qualified?". A pair
 * is the running kernel's release and the next kernel's release, plus the next image's
 * sha256 when there is an image (a rebuilt kernel of the same release is another kernel);
 * the newest record for it in DIR decides (record.ts). The answer is a sentence that names
 * the pair and how to qualify it.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { errorCode } from '../sys/error.js';
import { lookupQualification } from './record.js';

export interface QualificationVerdict {
  /** The directory of records the policy reads. */
  required: string;
  qualified: boolean;
  /** One sentence: which record qualifies the pair, or why none does and how to qualify it. */
  sentence: string;
  /** The record that decided, when there is one. */
  record?: string;
}

export function qualificationVerdict(
  dir: string,
  current: { release: string },
  next: { release: string },
  nextImage?: string,
): QualificationVerdict {
  try {
    const sha256 = nextImage
      ? createHash('sha256').update(fs.readFileSync(nextImage)).digest('hex')
      : undefined;
    const found = lookupQualification(dir, current, { release: next.release, ...(sha256 && { sha256 }) });
    if (found.qualified)
      return { required: dir, qualified: true, sentence: found.sentence, record: found.file! };
    const how = `luoctl qualify --from IMAGE-OF-${current.release} --to ${nextImage ?? `IMAGE-OF-${next.release}`} --dir ${dir} qualifies it`;
    return {
      required: dir,
      qualified: false,
      sentence: `${found.sentence}; this luod requires a passing qualification (--require-qualified): ${how}`,
      ...(found.file && { record: found.file }),
    };
  } catch (err) {
    return {
      required: dir,
      qualified: false,
      sentence: `the qualification of ${current.release} -> ${next.release} cannot be checked: ${errorCode(err)}: ${(err as Error).message}`,
    };
  }
}
