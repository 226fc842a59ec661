/**
 * CLIENTS and SESSIONS at scale: replies that fit the protocol's line
 * (MAX_LINE_BYTES), as STATUS does (status-page.ts).
 *
 * Each reply is one list (`clients`, `sessions`) that grows with the number
 * of VMMs: about 60 bytes a client, so past a thousand clients the whole no
 * longer fits a line, which no client may read. luod (pageList) sends the
 * whole list, as always, when it fits, and otherwise one page: entries
 * [offset, offset + limit), the limit halved until it fits. Every reply says
 * how long the list is (`count`); a paged one says which page it is (`page`,
 * with `next`: the offset to ask for, or null at the end). A client that
 * wants everything asks again with offset and limit and joins the pages
 * (wholeList). The list is read again for each page: connections that come
 * or go between two pages may be missed or seen twice (joined pages drop
 * the second sighting of a subscribed id or a session name).
 */
import type { StatusPage } from './status-page.js';

/** Entries in a page when the request does not say. */
export const LIST_PAGE_LIMIT = 500;
/** The largest page a request may ask for. */
export const LIST_MAX_LIMIT = 10_000;

export type ListReply<K extends string, T> = { [key in K]: T[] } & { count?: number; page?: StatusPage };

function bytes(value: object): number {
  return Buffer.byteLength(JSON.stringify(value));
}

/**
 * The reply to CLIENTS or SESSIONS: `list` whole under `key` when no page
 * was asked for and it takes at most `maxBytes`; else the page asked for
 * (default offset 0, limit LIST_PAGE_LIMIT), its limit halved until it
 * fits. A page of one entry always fits: ids and names are short.
 */
export function pageList<K extends string, T>(
  key: K,
  list: T[],
  request: { offset?: number | undefined; limit?: number | undefined },
  maxBytes: number,
): ListReply<K, T> {
  const count = list.length;
  if (request.offset === undefined && request.limit === undefined) {
    const whole = { [key]: list, count } as ListReply<K, T>;
    if (bytes(whole) <= maxBytes) return whole;
  }
  const offset = request.offset ?? 0;
  for (let limit = request.limit ?? LIST_PAGE_LIMIT; ; limit = Math.max(1, Math.floor(limit / 2))) {
    const page: StatusPage = { offset, limit, next: offset + limit < count ? offset + limit : null };
    const reply = { [key]: list.slice(offset, offset + limit), count, page } as ListReply<K, T>;
    if (limit === 1 || bytes(reply) <= maxBytes) return reply;
  }
}

/**
 * Every page of a list, asked with `ask` (the command with `offset` and
 * `limit`, or none for the first), joined; `keyOf` names an entry, so that
 * one seen on two pages (the list moved between them) counts once. A luod
 * older than pages answers the first whole: that is the answer.
 */
export async function wholeList<K extends string, T, R extends ListReply<K, T>>(
  key: K,
  keyOf: (entry: T) => string | null,
  ask: (page?: { offset: number; limit: number }) => Promise<R>,
): Promise<R> {
  const first = await ask();
  if (!first.page || first.page.next === null) return first;
  const seen = new Set<string>();
  const all: T[] = [];
  const take = (entries: T[]) => {
    for (const entry of entries) {
      const k = keyOf(entry);
      if (k !== null) {
        if (seen.has(k)) continue;
        seen.add(k);
      }
      all.push(entry);
    }
  };
  take(first[key]);
  for (let next: number | null = first.page.next; next !== null; ) {
    const page = await ask({ offset: next, limit: first.page.limit });
    take(page[key]);
    // A page luod had to make smaller to fit the line says where it stopped.
    next = page.page?.next ?? null;
  }
  const joined = { ...first, [key]: all, count: all.length };
  delete joined.page;
  return joined;
}
