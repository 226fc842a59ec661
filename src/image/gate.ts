/**
 * The gate before every kexec: what this kernel writes against what the next kernel
 * reads, judged in the order the next kernel meets them (abi/versions.ts says why each
 * mismatch ends as it does):
 *  - the KHO root: a different compatible, or no KHO at all, and the next kernel boots
 *    cold: every preserved byte (every VM's memory) is lost;
 *  - LUO: a different compatible and the next kernel panics; none, and nothing is retrieved;
 *  - file handlers: one the next kernel lacks, and those files cannot be retrieved (EIO).
 * The verdict carries its consequence as one sentence for the operator.
 */
export interface SpokenFormats {
  /** Release (or emulated version) of the kernel these formats are from. */
  release: string;
  kho?: string;
  luo?: string;
  files: string[];
  /** Where they were read: 'image' (the kernel's own image), 'debugfs', 'emulator', 'table', 'unknown'. */
  source: string;
  /**
   * Set when the image could not be read (`CODE: why`): then nothing above is known, and
   * the gate cannot judge the pair.
   */
  unreadable?: string;
}

/** `unknown`: the gate cannot tell (an image it cannot read, a running kernel it knows nothing of). */
export type GateOutcome = 'works' | 'no-handover' | 'cold-boot' | 'panic' | 'files-lost' | 'unknown';

export interface GateVerdict {
  outcome: GateOutcome;
  ok: boolean;
  /** One sentence: what the next kernel would do, and why. */
  sentence: string;
  current: SpokenFormats;
  next: SpokenFormats;
}

export function gateVerdict(current: SpokenFormats, next: SpokenFormats): GateVerdict {
  const verdict = (outcome: GateOutcome, sentence: string): GateVerdict => ({
    outcome,
    ok: outcome === 'works',
    sentence,
    current,
    next,
  });
  const nextName = `the next kernel (${next.release})`;
  const thisName = `this kernel (${current.release})`;
  // What cannot be read cannot be judged: never a guess in either direction.
  if (next.unreadable !== undefined) {
    return verdict(
      'unknown',
      `the gate cannot read the next kernel's image (${next.unreadable}): it cannot tell whether that kernel reads what this kernel writes`,
    );
  }
  if (current.unreadable !== undefined || current.source === 'unknown') {
    return verdict(
      'unknown',
      `the gate does not know what ${thisName} writes (${current.unreadable ?? "no image, no KHO state in debugfs, not in luokit's table"}): it cannot judge the next kernel`,
    );
  }
  if (!current.kho || !current.luo) {
    return verdict(
      'no-handover',
      `${thisName} has no ${current.kho ? 'LUO' : 'KHO'}: it cannot preserve anything across a kexec`,
    );
  }
  if (!next.kho) {
    return verdict(
      'cold-boot',
      `${nextName} has no KHO; this kernel writes ${current.kho}: the next kernel would boot cold and every preserved byte (every VM's memory) would be lost`,
    );
  }
  if (next.kho !== current.kho) {
    return verdict(
      'cold-boot',
      `${nextName} reads ${next.kho}; this kernel writes ${current.kho}: the next kernel would boot cold and every preserved byte (every VM's memory) would be lost`,
    );
  }
  if (!next.luo) {
    return verdict(
      'files-lost',
      `${nextName} has no LUO; this kernel writes ${current.luo}: no preserved session could be retrieved`,
    );
  }
  if (next.luo !== current.luo) {
    return verdict(
      'panic',
      `${nextName} reads ${next.luo}; this kernel writes ${current.luo}: the next kernel would panic`,
    );
  }
  const missing = current.files.filter((f) => !next.files.includes(f));
  if (missing.length > 0) {
    const reads = next.files.length ? `reads ${next.files.join(', ')}` : 'has no file handler';
    return verdict(
      'files-lost',
      `${nextName} ${reads}; this kernel writes ${missing.join(', ')}: those files could not be retrieved (EIO)`,
    );
  }
  return verdict(
    'works',
    `${nextName} reads what this kernel writes (${current.kho}, ${current.luo}, ${current.files.join(', ') || 'no file handler'})`,
  );
}
