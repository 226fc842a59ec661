/**
 * LZMA decoding (the kernel's `.lzma` payloads, and LZMA2 chunks inside `.xz`), written
 * from the format's description rather than taken from a package: the pure-JS LZMA
 * packages on npm are unmaintained or slow, and the decoder is small. One decoder keeps
 * its state across LZMA2 chunks; `decodeLzmaAlone` reads the .lzma ("alone") container.
 */
import { corrupt, Output } from './output.js';

const STATES = 12;
const POS_STATES_MAX = 16;
const END_POS_MODEL_INDEX = 14;
const FULL_DISTANCES = 128;
const ALIGN_BITS = 4;
const MATCH_MIN_LEN = 2;
const PROB_INIT = 1024;

/** The length coder (match and rep lengths): choice, choice2, low[16][8], mid[16][8], high[256]. */
const LEN_CHOICE = 0;
const LEN_CHOICE2 = 1;
const LEN_LOW = 2;
const LEN_MID = LEN_LOW + POS_STATES_MAX * 8;
const LEN_HIGH = LEN_MID + POS_STATES_MAX * 8;
const LEN_SIZE = LEN_HIGH + 256;

export class LzmaDecoder {
  readonly out: Output;
  lc = 3;
  lp = 0;
  pb = 2;
  #literal = new Uint16Array(0x300 << 3);
  #isMatch = new Uint16Array(STATES << 4);
  #isRep = new Uint16Array(STATES);
  #isRepG0 = new Uint16Array(STATES);
  #isRepG1 = new Uint16Array(STATES);
  #isRepG2 = new Uint16Array(STATES);
  #isRep0Long = new Uint16Array(STATES << 4);
  #posSlot = new Uint16Array(4 << 6);
  #posSpecial = new Uint16Array(1 + FULL_DISTANCES - END_POS_MODEL_INDEX);
  #align = new Uint16Array(1 << ALIGN_BITS);
  #len = new Uint16Array(LEN_SIZE);
  #repLen = new Uint16Array(LEN_SIZE);
  #state = 0;
  #rep0 = 0;
  #rep1 = 0;
  #rep2 = 0;
  #rep3 = 0;
  // The range decoder.
  #in: Uint8Array = new Uint8Array(0);
  #inPos = 0;
  #inEnd = 0;
  #range = 0;
  #code = 0;

  constructor(out: Output) {
    this.out = out;
  }

  /** lc/lp/pb from the properties byte. */
  setProperties(props: number): void {
    if (props >= 9 * 5 * 5) throw corrupt('LZMA', `properties byte ${props}`);
    this.lc = props % 9;
    this.lp = Math.floor(props / 9) % 5;
    this.pb = Math.floor(props / 45);
    if (this.#literal.length !== 0x300 << (this.lc + this.lp))
      this.#literal = new Uint16Array(0x300 << (this.lc + this.lp));
  }

  /** Forget all statistics (a new stream, or an LZMA2 state reset). */
  resetState(): void {
    for (const probs of [
      this.#literal,
      this.#isMatch,
      this.#isRep,
      this.#isRepG0,
      this.#isRepG1,
      this.#isRepG2,
      this.#isRep0Long,
      this.#posSlot,
      this.#posSpecial,
      this.#align,
      this.#len,
      this.#repLen,
    ])
      probs.fill(PROB_INIT);
    this.#state = 0;
    this.#rep0 = this.#rep1 = this.#rep2 = this.#rep3 = 0;
  }

  /** Start the range decoder on input[offset, end). */
  startRange(input: Uint8Array, offset: number, end: number): void {
    if (end - offset < 5 || input[offset] !== 0) throw corrupt('LZMA', 'bad range coder start');
    this.#in = input;
    this.#inEnd = end;
    this.#code =
      ((input[offset + 1]! << 24) |
        (input[offset + 2]! << 16) |
        (input[offset + 3]! << 8) |
        input[offset + 4]!) >>>
      0;
    this.#inPos = offset + 5;
    this.#range = 0xffffffff;
  }

  /** Where the range decoder is in its input. */
  get inputPosition(): number {
    return this.#inPos;
  }

  #byte(): number {
    if (this.#inPos >= this.#inEnd) throw corrupt('LZMA', 'input ends early');
    return this.#in[this.#inPos++]!;
  }

  #bit(probs: Uint16Array, i: number): number {
    const p = probs[i]!;
    const bound = (this.#range >>> 11) * p;
    let bit: number;
    if (this.#code < bound) {
      this.#range = bound;
      probs[i] = p + ((2048 - p) >>> 5);
      bit = 0;
    } else {
      this.#range -= bound;
      this.#code -= bound;
      probs[i] = p - (p >>> 5);
      bit = 1;
    }
    if (this.#range < 0x1000000) {
      this.#range = this.#range * 256;
      this.#code = this.#code * 256 + this.#byte();
    }
    return bit;
  }

  #direct(count: number): number {
    let result = 0;
    for (let i = 0; i < count; i++) {
      this.#range = this.#range >>> 1;
      let bit = 0;
      if (this.#code >= this.#range) {
        this.#code -= this.#range;
        bit = 1;
      }
      result = result * 2 + bit;
      if (this.#range < 0x1000000) {
        this.#range = this.#range * 256;
        this.#code = this.#code * 256 + this.#byte();
      }
    }
    return result;
  }

  #tree(probs: Uint16Array, base: number, bits: number): number {
    let m = 1;
    for (let i = 0; i < bits; i++) m = (m << 1) | this.#bit(probs, base + m);
    return m - (1 << bits);
  }

  #reverseTree(probs: Uint16Array, base: number, bits: number): number {
    let m = 1;
    let symbol = 0;
    for (let i = 0; i < bits; i++) {
      const bit = this.#bit(probs, base + m);
      m = (m << 1) | bit;
      symbol |= bit << i;
    }
    return symbol;
  }

  #length(probs: Uint16Array, posState: number): number {
    if (this.#bit(probs, LEN_CHOICE) === 0) return this.#tree(probs, LEN_LOW + posState * 8, 3);
    if (this.#bit(probs, LEN_CHOICE2) === 0) return 8 + this.#tree(probs, LEN_MID + posState * 8, 3);
    return 16 + this.#tree(probs, LEN_HIGH, 8);
  }

  #distance(len: number): number {
    const lenState = Math.min(len, 3);
    const slot = this.#tree(this.#posSlot, lenState << 6, 6);
    if (slot < 4) return slot;
    const directBits = (slot >>> 1) - 1;
    let dist = (2 | (slot & 1)) * 2 ** directBits;
    if (slot < END_POS_MODEL_INDEX)
      return dist + this.#reverseTree(this.#posSpecial, dist - slot, directBits);
    dist += this.#direct(directBits - ALIGN_BITS) * 16;
    return dist + this.#reverseTree(this.#align, 0, ALIGN_BITS);
  }

  /**
   * Decode until the output holds `until` bytes (LZMA2 chunks, .lzma with a known size),
   * or until the end marker when `until` is Infinity. `dictStart`: the first output byte a
   * match may reach back to. Returns true if the end marker was met.
   */
  decode(until: number, dictStart = 0): boolean {
    const out = this.out;
    const pbMask = (1 << this.pb) - 1;
    const lpMask = (1 << this.lp) - 1;
    const lc = this.lc;
    let state = this.#state;
    let rep0 = this.#rep0;
    let rep1 = this.#rep1;
    let rep2 = this.#rep2;
    let rep3 = this.#rep3;
    try {
      while (out.pos < until) {
        const pos = out.pos;
        const posState = pos & pbMask;
        if (this.#bit(this.#isMatch, (state << 4) | posState) === 0) {
          const prev = pos > dictStart ? out.buf[pos - 1]! : 0;
          const base = 0x300 * (((pos & lpMask) << lc) + (prev >>> (8 - lc)));
          let symbol = 1;
          if (state >= 7) {
            if (pos - rep0 - 1 < dictStart) throw corrupt('LZMA', 'distance past the start');
            let matchByte = out.buf[pos - rep0 - 1]!;
            while (symbol < 0x100) {
              const matchBit = (matchByte >>> 7) & 1;
              matchByte <<= 1;
              const bit = this.#bit(this.#literal, base + ((1 + matchBit) << 8) + symbol);
              symbol = (symbol << 1) | bit;
              if (matchBit !== bit) break;
            }
          }
          while (symbol < 0x100) symbol = (symbol << 1) | this.#bit(this.#literal, base + symbol);
          out.reserve(1);
          out.buf[out.pos++] = symbol & 0xff;
          state = state < 4 ? 0 : state < 10 ? state - 3 : state - 6;
          continue;
        }
        let len: number;
        if (this.#bit(this.#isRep, state) === 1) {
          if (pos === dictStart) throw corrupt('LZMA', 'repeat before any data');
          if (this.#bit(this.#isRepG0, state) === 0) {
            if (this.#bit(this.#isRep0Long, (state << 4) | posState) === 0) {
              state = state < 7 ? 9 : 11;
              out.reserve(1);
              out.buf[out.pos] = out.buf[pos - rep0 - 1]!;
              out.pos++;
              continue;
            }
          } else {
            let dist: number;
            if (this.#bit(this.#isRepG1, state) === 0) dist = rep1;
            else {
              if (this.#bit(this.#isRepG2, state) === 0) dist = rep2;
              else {
                dist = rep3;
                rep3 = rep2;
              }
              rep2 = rep1;
            }
            rep1 = rep0;
            rep0 = dist;
          }
          len = this.#length(this.#repLen, posState);
          state = state < 7 ? 8 : 11;
        } else {
          rep3 = rep2;
          rep2 = rep1;
          rep1 = rep0;
          len = this.#length(this.#len, posState);
          state = state < 7 ? 7 : 10;
          rep0 = this.#distance(len);
          if (rep0 === 0xffffffff) return true;
        }
        len += MATCH_MIN_LEN;
        if (rep0 >= pos - dictStart) throw corrupt('LZMA', 'distance past the start');
        if (until !== Number.POSITIVE_INFINITY && len > until - pos)
          throw corrupt('LZMA', 'match past the end');
        out.reserve(len);
        const buf = out.buf;
        let from = pos - rep0 - 1;
        let to = pos;
        const stop = pos + len;
        while (to < stop) buf[to++] = buf[from++]!;
        out.pos = stop;
      }
      return false;
    } finally {
      this.#state = state;
      this.#rep0 = rep0;
      this.#rep1 = rep1;
      this.#rep2 = rep2;
      this.#rep3 = rep3;
    }
  }
}

/**
 * A .lzma ("LZMA alone") stream: properties byte, dictionary size (LE32), uncompressed
 * size (LE64, all ones when unknown: then the stream ends with the end marker).
 */
export function decodeLzmaAlone(input: Uint8Array, sizeHint = 0): Buffer {
  if (input.length < 13 + 5) throw corrupt('LZMA', 'shorter than its header');
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  const low = view.getUint32(5, true);
  const high = view.getUint32(9, true);
  const known = !(low === 0xffffffff && high === 0xffffffff);
  const size = known ? high * 2 ** 32 + low : Number.POSITIVE_INFINITY;
  const out = new Output(known ? size : sizeHint || input.length * 4);
  const decoder = new LzmaDecoder(out);
  decoder.setProperties(input[0]!);
  decoder.resetState();
  decoder.startRange(input, 13, input.length);
  const ended = decoder.decode(size);
  if (!known && !ended) throw corrupt('LZMA', 'no end marker');
  return out.result();
}
