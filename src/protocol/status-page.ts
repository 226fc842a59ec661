/**
 * STATUS at scale: a reply that fits the protocol's line (MAX_LINE_BYTES).
 *
 * What grows with the number of clients in a STATUS reply: `subscribers`,
 * `pending_claims`, and the last update's `claims`, `failed` and timeline
 * marks of single clients (a READY and a CLAIM each). With a thousand VMMs
 * they make a line longer than 64 KiB, which no client may read.
 *
 * So luod (pageStatus) sends the whole reply, as always, when it fits, and
 * otherwise one page: each of those lists cut to entries [offset, offset +
 * limit), the update-wide timeline marks (no `client`) always whole. Every
 * reply says how long each list is (`counts`); a paged one says which page
 * it is (`page`, with `next`: the offset to ask for, or null at the end).
 * A client that wants everything asks again (STATUS with offset and limit)
 * and joins the pages (mergeStatusPages); one that only wants the phase and
 * the counts reads the first.
 */
import type { StatusReply, TimelineMark } from './replies.js';

/** Entries of each list in a page when the request does not say. */
export const STATUS_PAGE_LIMIT = 100;
/** The largest page a request may ask for. */
export const STATUS_MAX_LIMIT = 10_000;

export interface StatusCounts {
  subscribers: number;
  pending_claims: number;
  claims: number;
  failed: number;
  client_marks: number;
}

export interface StatusPage {
  offset: number;
  limit: number;
  /** The offset of the next page, or null when no list goes further. */
  next: number | null;
}

export function statusCounts(status: StatusReply): StatusCounts {
  const last = status.last_update;
  return {
    subscribers: status.subscribers.length,
    pending_claims: status.pending_claims.length,
    claims: last?.claims?.length ?? 0,
    failed: last?.failed?.length ?? 0,
    client_marks: last?.timeline.filter((m) => m.client !== undefined).length ?? 0,
  };
}

function cut(status: StatusReply, offset: number, limit: number): StatusReply {
  const slice = <T>(list: T[]) => list.slice(offset, offset + limit);
  const last = status.last_update;
  let timeline: TimelineMark[] | undefined;
  if (last) {
    // The update-wide marks whole, the clients' marks [offset, offset + limit), in their order.
    let nth = 0;
    timeline = last.timeline.filter((m) => {
      if (m.client === undefined) return true;
      const keep = nth >= offset && nth < offset + limit;
      nth++;
      return keep;
    });
  }
  return {
    ...status,
    subscribers: slice(status.subscribers),
    pending_claims: slice(status.pending_claims),
    last_update: last && {
      ...last,
      timeline: timeline!,
      ...(last.claims && { claims: slice(last.claims) }),
      ...(last.failed && { failed: slice(last.failed) }),
    },
  };
}

function bytes(value: object): number {
  return Buffer.byteLength(JSON.stringify(value));
}

/**
 * The reply to a STATUS: `full` whole when no page was asked for and it
 * takes at most `maxBytes`; else the page asked for (default offset 0,
 * limit STATUS_PAGE_LIMIT), its limit halved until it fits. A page of one
 * entry per list always fits: ids are short, reasons at most 1 KiB.
 */
export function pageStatus(
  full: StatusReply,
  request: { offset?: number | undefined; limit?: number | undefined },
  maxBytes: number,
): StatusReply {
  const counts = statusCounts(full);
  if (request.offset === undefined && request.limit === undefined) {
    const whole = { ...full, counts };
    if (bytes(whole) <= maxBytes) return whole;
  }
  const offset = request.offset ?? 0;
  const longest = Math.max(...Object.values(counts));
  for (let limit = request.limit ?? STATUS_PAGE_LIMIT; ; limit = Math.max(1, Math.floor(limit / 2))) {
    const page: StatusPage = { offset, limit, next: offset + limit < longest ? offset + limit : null };
    const reply = { ...cut(full, offset, limit), counts, page };
    if (limit === 1 || bytes(reply) <= maxBytes) return reply;
  }
}

/**
 * The whole STATUS from its pages (the first, then each `next`): lists
 * joined, the clients' timeline marks put back among the update-wide ones by
 * time. Pages of different updates cannot be joined: `undefined` then (ask
 * again from the first page).
 */
export function mergeStatusPages(pages: StatusReply[]): StatusReply | undefined {
  const first = pages[0];
  if (!first) return undefined;
  const update = first.last_update?.update ?? null;
  if (pages.some((p) => (p.last_update?.update ?? null) !== update)) return undefined;
  const all = <T>(pick: (p: StatusReply) => T[] | undefined) => pages.flatMap((p) => pick(p) ?? []);
  const last = first.last_update;
  const merged: StatusReply = {
    ...first,
    subscribers: all((p) => p.subscribers),
    pending_claims: all((p) => p.pending_claims),
    last_update: last && {
      ...last,
      timeline: [
        ...last.timeline.filter((m) => m.client === undefined),
        ...all((p) => p.last_update?.timeline.filter((m) => m.client !== undefined)),
      ]
        .map((mark, i) => ({ mark, i }))
        .sort((a, b) => a.mark.at - b.mark.at || a.i - b.i)
        .map(({ mark }) => mark),
      ...(last.claims && { claims: all((p) => p.last_update?.claims) }),
      ...(last.failed && { failed: all((p) => p.last_update?.failed) }),
    },
  };
  delete merged.page;
  return merged;
}

/**
 * Every page of a STATUS, asked with `ask` (a STATUS with `offset` and
 * `limit`, or none for the first), joined. A luod older than pages answers
 * the first whole: that is the answer.
 */
export async function wholeStatus<R extends StatusReply>(
  ask: (page?: { offset: number; limit: number }) => Promise<R>,
): Promise<R> {
  for (let attempt = 1; ; attempt++) {
    const first = await ask();
    if (!first.page || first.page.next === null) return first;
    const pages: StatusReply[] = [first];
    for (let next: number | null = first.page.next; next !== null; ) {
      const page = await ask({ offset: next, limit: first.page.limit });
      pages.push(page);
      // A page luod had to make smaller to fit the line says where it stopped.
      next = page.page?.next ?? null;
    }
    const merged = mergeStatusPages(pages);
    if (merged) return merged as R;
    if (attempt >= 3) return first; // updates keep starting between pages: the first page stands
  }
}
