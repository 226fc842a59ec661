/** `luoctl inspect` for people: reports as indented trees, problems as precise lines. */
import type { DebugfsReport, DebugfsSide } from './debugfs.js';
import { formatBytes, REACTION_LABEL } from './format.js';
import type { FileReport, HandoverReport, MemfdReport, ProblemReport } from './report.js';

const VERDICT_TEXT: Record<HandoverReport['verdict'], string> = {
  ok: 'ok: the successor kernel restores everything',
  warning: 'ok with warnings: the successor kernel restores everything',
  'retrieve-fails': 'some files cannot be retrieved (RETRIEVE_FD fails for them)',
  'device-eio': 'every open of /dev/liveupdate fails with EIO: no session can be retrieved',
  panic: 'the successor kernel panics in LUO early init',
  'cold-boot': 'the successor kernel boots cold: every preserved byte is lost',
};

/** The whole handover as a tree. */
export function renderHandover(report: HandoverReport): string {
  const lines: string[] = [sourceLine(report), `verdict: ${VERDICT_TEXT[report.verdict]}`, ''];
  const { kho } = report;
  lines.push(
    `KHO root FDT: ${kho.compatible.join(', ') || 'no compatible'}, ${kho.fdtBytes} bytes` +
      (kho.memoryMap ? `, preserved-memory-map at ${kho.memoryMap}` : ''),
  );
  for (const entry of kho.reserveMap) lines.push(`  reserve map: ${entry.address} +${entry.size}`);
  if (kho.subtrees.length > 0) {
    lines.push('  subtrees:');
    const width = Math.max(...kho.subtrees.map((s) => s.name.length));
    for (const s of kho.subtrees) {
      lines.push(
        s.error
          ? `    ${s.name.padEnd(width)}  unreadable: ${s.error}`
          : `    ${s.name.padEnd(width)}  at ${s.pa}, ${s.size} bytes`,
      );
    }
  }

  const p = report.preserved;
  if (p) {
    lines.push(
      `preserved memory: ${formatBytes(BigInt(p.bytes))} in ${p.blocks} ${plural(p.blocks, 'block')} ` +
        `(${p.pages} pages, ${p.runs} ${plural(p.runs, 'run')}); radix tree: ${p.radixPages} pages`,
    );
    for (const o of p.byOrder) {
      lines.push(
        `  order ${o.order} (${formatBytes(BigInt(o.blockBytes))}): ${o.blocks} ${plural(o.blocks, 'block')}, ` +
          `${formatBytes(BigInt(o.bytes))}, ${o.runs} ${plural(o.runs, 'run')}`,
      );
      for (const range of p.ranges.filter((r) => r.order === o.order)) {
        lines.push(`    ${range.start}-${range.end}  ${range.blocks} ${plural(range.blocks, 'block')}`);
      }
    }
    if (p.rangesOmitted > 0) lines.push(`  (${p.rangesOmitted} more runs not listed; --ranges N or all)`);
  } else {
    lines.push('preserved memory: unreadable (see problems)');
  }

  const m = report.kexecMetadata;
  lines.push(
    m
      ? `kexec-metadata: previous release ${m.previousRelease || '(empty)'}, kexec count ${m.kexecCount}`
      : 'kexec-metadata: none',
  );
  if (report.memblock) {
    lines.push(`memblock: ${report.memblock.regions.length} reserve_mem region(s) at ${report.memblock.pa}`);
    for (const r of report.memblock.regions)
      lines.push(`  ${r.name}: ${r.start} +${formatBytes(BigInt(r.size))}`);
  }

  const luo = report.luo;
  if (!luo) {
    lines.push('LUO: none');
  } else {
    lines.push(
      `LUO: ${luo.compatible || '(empty compatible)'} at ${luo.pa}, live update ${luo.liveupdateNum}`,
    );
    lines.push(
      `  sessions at ${luo.sessionsPa} (${luo.sessionBlocks.length} ${plural(luo.sessionBlocks.length, 'block')}), FLBs at ${luo.flbsPa}`,
    );
    lines.push(`  sessions: ${report.sessions.length}`);
    for (const session of report.sessions) {
      const truncated = session.nameTerminated ? '' : ' (no NUL: truncated to 63 bytes)';
      lines.push(
        `    session "${session.name}"${truncated}: ${session.fileCount} ${plural(Number(session.fileCount), 'file')}` +
          (session.fileBlocks.length > 0 ? `, file blocks ${session.fileBlocks.join(' ')}` : ''),
      );
      lines.push(...problemsFor(report.problems, session.name, null, '      '));
      for (const file of session.files) {
        lines.push(...renderFile(file, '      '));
        lines.push(...problemsFor(report.problems, session.name, file.token, '          '));
      }
    }
    lines.push(`  FLBs: ${report.flbs.length === 0 ? 'none' : report.flbs.length}`);
    for (const flb of report.flbs) lines.push(`    ${flb.name}: data ${flb.data}, ${flb.count} file(s)`);
  }
  lines.push('');
  for (const note of report.notes) lines.push(`note: ${note}`);
  lines.push(...renderProblems(report.problems));
  return lines.join('\n');
}

/** `--check`: what was checked, then every problem. */
export function renderCheck(report: HandoverReport | DebugfsReport): string {
  const lines: string[] = [];
  if (report.source.kind === 'debugfs') {
    lines.push(`luoctl inspect --check: KHO debugfs at ${report.source.debugfs}`);
  } else {
    const r = report as HandoverReport;
    const files = r.sessions.reduce((n, s) => n + s.files.length, 0);
    lines.push(sourceLine(r));
    lines.push(
      `checked: KHO root FDT, ${r.preserved ? `${r.preserved.blocks} preserved blocks` : 'preserved-memory map'}, ` +
        `kexec-metadata, ${r.memblock ? 'memblock, ' : ''}LUO, ${r.sessions.length} ${plural(r.sessions.length, 'session')}, ` +
        `${files} ${plural(files, 'file')}, ${r.flbs.length} FLB(s)`,
    );
    for (const note of r.notes) lines.push(`note: ${note}`);
  }
  lines.push(...renderProblems(report.problems));
  return lines.join('\n');
}

export function renderDebugfs(report: DebugfsReport): string {
  const lines: string[] = [
    `luoctl inspect: live KHO state in ${report.source.debugfs} (debugfs; physical memory is not read)`,
    '',
  ];
  if (report.out) {
    lines.push('out (what this kernel will hand over):');
    lines.push(
      report.out.scratch.length > 0
        ? `  scratch areas: ${report.out.scratch.map((s) => `${s.start} +${s.size}`).join(', ')}`
        : '  scratch areas: none listed',
    );
    lines.push(...renderSide(report.out, 'out'));
  }
  if (report.in) {
    lines.push('in (what this kernel booted from):');
    lines.push(...renderSide(report.in, 'in'));
  }
  if (report.notFollowed.length > 0) {
    lines.push('not followed (in physical memory, which debugfs does not expose):');
    for (const text of report.notFollowed) lines.push(`  ${text}`);
    lines.push('  to see them, inspect a memory dump: luoctl inspect --fdt FDT --memory DUMP');
  }
  for (const note of report.notes) lines.push(`note: ${note}`);
  lines.push('', ...renderProblems(report.problems));
  return lines.join('\n');
}

function renderSide(side: DebugfsSide, name: string): string[] {
  const lines: string[] = [];
  const fdt = side.fdt;
  if (!fdt) {
    lines.push(`  root FDT: not exposed (no kho/${name}/fdt)`);
  } else if (fdt.error) {
    lines.push(`  root FDT: ${fdt.bytes} bytes, invalid: ${fdt.error}`);
  } else {
    lines.push(
      `  root FDT: ${fdt.compatible.join(', ')}, ${fdt.bytes} bytes, preserved-memory-map at ${fdt.memoryMap}`,
    );
    for (const s of fdt.subtrees) {
      lines.push(
        s.error ? `    subtree ${s.name}: ${s.error}` : `    subtree ${s.name}: at ${s.pa}, ${s.size} bytes`,
      );
    }
  }
  lines.push(
    `  sub_fdts: ${side.subtrees.length === 0 ? 'none' : side.subtrees.map((b) => b.name).join(', ')}`,
  );
  for (const blob of side.subtrees) {
    const head = `    ${blob.name} (${blob.bytes} bytes${blob.pa ? ` at ${blob.pa}` : ''})`;
    if (blob.error) lines.push(`${head}: undecodable: ${blob.error}`);
    else if (blob.luo) {
      lines.push(
        `${head}: ${blob.luo.compatible}, live update ${blob.luo.liveupdateNum}, sessions at ${blob.luo.sessionsPa}, FLBs at ${blob.luo.flbsPa}`,
      );
    } else if (blob.kexecMetadata) {
      lines.push(
        `${head}: release ${blob.kexecMetadata.previousRelease}, kexec count ${blob.kexecMetadata.kexecCount}`,
      );
    } else if (blob.memblock) {
      lines.push(`${head}: ${blob.memblock.regions.length} reserve_mem region(s)`);
      for (const r of blob.memblock.regions)
        lines.push(`      ${r.name}: ${r.start} +${formatBytes(BigInt(r.size))}`);
    } else lines.push(`${head}: not a subtree luokit decodes`);
  }
  return lines;
}

function renderFile(file: FileReport, indent: string): string[] {
  const tokenHex = `0x${BigInt(file.token).toString(16)}`;
  const lines = [`${indent}file token ${file.token} (${tokenHex}): ${file.compatible}, data ${file.data}`];
  if (file.memfd) lines.push(...renderMemfd(file.memfd, `${indent}    `));
  else if (file.compatible.startsWith('memfd-')) lines.push(`${indent}    memfd record unreadable`);
  return lines;
}

function renderMemfd(memfd: MemfdReport, indent: string): string[] {
  const seals =
    memfd.sealNames.length > 0 ? `${memfd.sealNames.join('|')} (0x${memfd.seals.toString(16)})` : 'none';
  const lines = [
    `${indent}size ${memfd.size} (${formatBytes(BigInt(memfd.size))}), pos ${memfd.pos}, seals ${seals}` +
      (memfd.flags ? `, flags 0x${memfd.flags.toString(16)}` : ''),
  ];
  const folios = memfd.folios;
  if (!folios) {
    lines.push(
      `${indent}folios: ${memfd.nrFolios} listed (array at ${memfd.folioArray.first}); not restorable (see problems)`,
    );
    return lines;
  }
  const orders = folios.byOrder.map((o) => `order ${o.order} x${o.count}`).join(', ');
  const flags = folios.byFlags.map((f) => `${f.names.join('|') || 'none'} x${f.count}`).join(', ');
  lines.push(
    `${indent}folios: ${folios.count} (${folios.pages} pages${orders ? `: ${orders}` : ''})` +
      (flags ? `, flags ${flags}` : '') +
      (Number(folios.missingPages) > 0
        ? `, ${folios.missingPages} page(s) below size missing (read as zeros)`
        : ''),
  );
  return lines;
}

export function renderProblems(problems: readonly ProblemReport[]): string[] {
  if (problems.length === 0) return ['problems: none'];
  const blocking = problems.filter((p) => p.reaction !== 'warning').length;
  const lines = [
    `problems: ${problems.length} (${blocking} that stop a restore, ${problems.length - blocking} ${plural(problems.length - blocking, 'warning')})`,
  ];
  for (const problem of problems) lines.push(...renderProblem(problem, '  '));
  return lines;
}

function renderProblem(problem: ProblemReport, indent: string): string[] {
  const where =
    problem.pa !== null
      ? ` at pa ${problem.pa}`
      : problem.offset !== null
        ? ` at offset ${problem.offset}`
        : '';
  const context = [
    problem.session !== null ? `session "${problem.session}"` : '',
    problem.token !== null ? `file token ${problem.token}` : '',
  ]
    .filter(Boolean)
    .join(', ');
  return [
    `${indent}[${REACTION_LABEL[problem.reaction]}] ${problem.structure}${where}: ${problem.reason}`,
    `${indent}    kernel: ${problem.effect}${context ? `; ${context}` : ''}`,
  ];
}

function problemsFor(
  problems: readonly ProblemReport[],
  session: string,
  token: string | null,
  indent: string,
): string[] {
  return problems
    .filter((p) => p.session === session && p.token === token)
    .map((p) => `${indent}! ${REACTION_LABEL[p.reaction]}: ${p.message}`);
}

function sourceLine(report: HandoverReport): string {
  const s = report.source;
  if (s.kind === 'emulator') {
    const which =
      s.handover === 'incoming'
        ? 'the handover the running emulated kernel booted from'
        : 'the handover written by an emulated kexec, not yet booted';
    return `luoctl inspect: emulator state ${s.stateDir}: ${which} (${s.fdt}, ${s.memory})`;
  }
  const fdt = s.fdt ?? `root FDT at ${s.fdtPa} in the dump`;
  return `luoctl inspect: ${fdt}, memory ${s.memory} (${s.memoryFormat}, ${s.memoryRanges.length} range(s))`;
}

function plural(n: number, word: string): string {
  return n === 1 ? word : `${word}s`;
}
