/**
 * The scenario format of the differential conformance suite: what a scenario file holds, how
 * frame descriptions (packet-builder options written as data) become bytes, and how a
 * scenario file is loaded and checked. The format is described for humans in `README.md`.
 *
 * @module
 */

import {
  arp,
  bytes,
  concat,
  ethernet,
  frame,
  type FrameOptions,
  type Ip4Options,
  type Ip6Ext,
  type Ip6Options,
  pseudoRandomBytes,
  TCP,
  withVnet,
} from "../support/packets.ts";

/** Comparator options, named like our flags; the QEMU property name is in the comment. */
export interface ScenarioOptions {
  /** `compare_timeout`, ms. */
  compareTimeout?: number;
  /** `expired_scan_cycle`, ms. */
  expiredScanCycle?: number;
  /** `max_queue_size`. */
  maxQueueSize?: number;
  /** `vnet_hdr_support`: every packet stream carries a vnet length word. */
  vnet?: boolean;
}

/**
 * Payload bytes as data: an ASCII string, or one of
 * `{hex}`, `{fill, len}`, `{random, seed}`, `{stream, from, to}` (a slice of a named stream).
 */
export type PayloadSpec =
  | string
  | { hex: string }
  | { fill: number; len: number }
  | { random: number; seed: number }
  | { stream: string; from?: number; to?: number }
  | { text: string; repeat: number };

/** TCP fields as data; `flags` may be letters ("S", "SA", "PA", "FA", "R", "A"). */
export interface TcpSpec {
  sport?: number;
  dport?: number;
  /** Sequence number; defaults to `isn` + the stream offset of the payload (`from`). */
  seq?: number;
  /** Initial sequence number used with stream payloads (default 1000). */
  isn?: number;
  ack?: number;
  flags?: number | string;
  window?: number;
  /** TCP options, hex. */
  options?: string;
  payload?: PayloadSpec;
  dataOffset?: number;
}

/** One frame as data. Exactly one of ip/arp/ethertype/hex shapes the frame. */
export interface FrameSpec {
  /** Inherit every field of another frame of this scenario, then override (deep merge). */
  like?: string;
  srcMac?: string;
  dstMac?: string;
  vlans?: { tpid?: number; vid: number; pcp?: number }[];
  ip?:
    | Omit<Ip4Options, "options"> & { options?: string }
    | Omit<Ip6Options, "ext"> & {
      ext?: (Omit<Ip6Ext, "data"> & { data?: string })[];
    };
  tcp?: TcpSpec;
  udp?: { sport?: number; dport?: number; payload?: PayloadSpec; checksum?: number };
  icmp?: { type?: number; code?: number; id?: number; seq?: number; payload?: PayloadSpec };
  /** Any other IP protocol (GRE 47, SCTP 132, ...): protocol number and its bytes. */
  raw?: { proto: number; bytes: PayloadSpec };
  /** An ARP request instead of IP. */
  arp?: { sender?: string; target?: string };
  /** A non-IP frame: this ethertype, then `l3` bytes. */
  ethertype?: number;
  l3?: PayloadSpec;
  /** The whole frame, hex (for anything the builder cannot express). */
  hex?: string;
  padTo?: number;
  /** Byte the padding up to `padTo` is made of (default 0). */
  padFill?: number;
  truncate?: number;
  /** Prefix this many bytes of virtio-net header (the vnet length word says the same). */
  vnet?: number;
  /** Byte the virtio-net header is filled with (default 0). */
  vnetFill?: number;
  /** Vnet length word to send when it must differ from `vnet` (insane headers). */
  vnetWord?: number;
}

/** Which stream a step writes to. */
export type StreamName = "pri" | "sec" | "notify" | "out";

/** What a step is expected to produce (every field defaults to "nothing"). */
export interface StepExpect {
  /** Labels of the frames released to outdev during the step, in order. */
  out?: string[];
  /** A checkpoint was requested (first DO_CHECKPOINT of the epoch) during the step. */
  ckpt?: boolean;
  /** Raw DO_CHECKPOINT count (only checked in scenarios with `countCheckpoints`). */
  ckpts?: number;
  /** Other notify-dev messages received, in order. */
  notify?: string[];
  /** Streams the implementation closed during the step. */
  closed?: StreamName[];
  /** Streams whose barrier timed out (the implementation stopped reading them). */
  stalled?: StreamName[];
  /** The implementation's process ended during the step. */
  exited?: boolean;
}

/** Raw bytes for a raw step. */
export interface RawSpec {
  into: "pri" | "sec" | "notify";
  hex?: string;
  frames?: string[];
  from?: number;
  to?: number;
}

/** One step of a scenario, plus what it is expected to produce. */
export interface Step extends StepExpect {
  /** Frames (labels) written to primary-in in one write. */
  pri?: string | string[];
  /** Frames (labels) written to secondary-in in one write. */
  sec?: string | string[];
  /** Split the framed bytes of `pri`/`sec` into writes of these sizes (the rest last). */
  chunks?: number[];
  /**
   * Write this many copies of the step's one `pri`/`sec` frame instead, each on a connection
   * of its own (its IPv4 destination varied), in one write: a full connection table.
   */
  flood?: number;
  /** A message written to notify-dev. */
  ntf?: string;
  /** Send `ntf` exactly as SPEC frames it, even to QEMU with vnet on (see README). */
  exact?: boolean;
  /**
   * Raw bytes written to a stream: `hex`, or bytes `from`..`to` of the framed `frames` (to
   * split frames across steps). No barrier is possible while a stream is inside a frame.
   */
  raw?: RawSpec;
  /** Sleep this long (ms) and record what arrived. */
  pause?: number;
  /** Wait up to `within` ms for a DO_CHECKPOINT to arrive. */
  wait_ckpt?: number;
  /** Close one of our four connections. */
  disconnect?: StreamName;
  /** Open it again (and re-synchronise). */
  reconnect?: StreamName;
  /** A comment. */
  note?: string;
  /** For SPEC 9 scenarios: what QEMU 7.2 does at this step instead. */
  qemu?: StepExpect;
}

/** A deliberate difference from QEMU (SPEC section 9). */
export interface Spec9 {
  /** The row of the SPEC 9 table, quoted from its first column. */
  rule: string;
  /** Why the two traces differ, in a sentence. */
  why?: string;
  /** A row this suite proposes for the table (not in SPEC.md yet). */
  proposed?: boolean;
}

/** One scenario. */
export interface Scenario {
  name: string;
  /** The SPEC rule it checks, quoted or paraphrased with its section. */
  rule: string;
  description?: string;
  options?: ScenarioOptions;
  /** Named byte streams for TCP payload slices. */
  streams?: Record<string, PayloadSpec>;
  /** Fields merged into every frame (under the frame's own fields). */
  defaults?: FrameSpec;
  frames: Record<string, FrameSpec>;
  steps: Step[];
  /** Compare raw DO_CHECKPOINT counts instead of "first of the epoch". */
  countCheckpoints?: boolean;
  spec9?: Spec9;
  /** No written expectation: only ours against QEMU (random conversations). */
  compareOnly?: boolean;
  /** Also run in `deno test` (a handful only). */
  smoke?: boolean;
}

/** A file under `scenarios/`. */
export interface ScenarioFile {
  topic: string;
  scenarios: Scenario[];
}

/** A frame ready to send: its bytes (vnet header included) and its vnet length word. */
export interface BuiltFrame {
  label: string;
  data: Uint8Array;
  vnetLen: number;
}

function hexBytes(hex: string): Uint8Array {
  const clean = hex.replace(/[\s:]/g, "");
  if (clean.length % 2 !== 0 || /[^0-9a-fA-F]/.test(clean)) throw new Error(`bad hex "${hex}"`);
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** Lower-case hex of bytes. */
export function toHex(data: Uint8Array): string {
  let s = "";
  for (const b of data) s += b.toString(16).padStart(2, "0");
  return s;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Deep merge of plain data objects: `over` wins, arrays are replaced. */
export function merge<T>(base: T, over: T): T {
  if (!isObject(base) || !isObject(over)) return (over === undefined ? base : over) as T;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = k in out ? merge(out[k], v) : v;
  return out as T;
}

const FLAG_LETTERS: Record<string, number> = {
  F: TCP.FIN,
  S: TCP.SYN,
  R: TCP.RST,
  P: TCP.PSH,
  A: TCP.ACK,
  U: TCP.URG,
};

function tcpFlags(flags: number | string | undefined): number | undefined {
  if (typeof flags !== "string") return flags;
  let f = 0;
  for (const c of flags) {
    const bit = FLAG_LETTERS[c];
    if (bit === undefined) throw new Error(`bad TCP flag letter "${c}" in "${flags}"`);
    f |= bit;
  }
  return f;
}

/** Builds frames of one scenario, resolving `like`, defaults, streams and payloads. */
export class FrameBook {
  readonly #scenario: Scenario;
  readonly #built = new Map<string, BuiltFrame>();
  readonly #streams = new Map<string, Uint8Array>();

  constructor(scenario: Scenario) {
    this.#scenario = scenario;
  }

  /** Every label of the scenario, in definition order. */
  labels(): string[] {
    return Object.keys(this.#scenario.frames);
  }

  /**
   * `count` copies of the IPv4 frame `label`, the i-th sent to 10.128.0.0 + i: as many
   * connections of their own.
   */
  flood(label: string, count: number): BuiltFrame[] {
    const spec = this.#resolve(label, new Set());
    return Array.from({ length: count }, (_, i) => {
      const dst = `10.${128 + ((i >> 16) & 0x7f)}.${(i >> 8) & 0xff}.${i & 0xff}`;
      return this.#build(label, merge(spec, { ip: { dst } } as FrameSpec));
    });
  }

  /** The built frame for `label`. */
  get(label: string): BuiltFrame {
    let f = this.#built.get(label);
    if (!f) {
      const spec = this.#resolve(label, new Set());
      f = this.#build(label, spec);
      this.#built.set(label, f);
    }
    return f;
  }

  #resolve(label: string, seen: Set<string>): FrameSpec {
    const spec = this.#scenario.frames[label];
    if (!spec) throw new Error(`unknown frame "${label}"`);
    if (seen.has(label)) throw new Error(`"like" cycle at frame "${label}"`);
    seen.add(label);
    const base = spec.like !== undefined
      ? this.#resolve(spec.like, seen)
      : (this.#scenario.defaults ?? {});
    const { like: _like, ...own } = spec;
    return merge(base, own as FrameSpec);
  }

  #stream(name: string): Uint8Array {
    let s = this.#streams.get(name);
    if (!s) {
      const spec = this.#scenario.streams?.[name];
      if (spec === undefined) throw new Error(`unknown stream "${name}"`);
      s = this.payload(spec);
      this.#streams.set(name, s);
    }
    return s;
  }

  /** The bytes a payload description stands for. */
  payload(p: PayloadSpec | undefined): Uint8Array {
    if (p === undefined) return new Uint8Array(0);
    if (typeof p === "string") return bytes(p);
    if ("hex" in p) return hexBytes(p.hex);
    if ("fill" in p) return new Uint8Array(p.len).fill(p.fill);
    if ("random" in p) return pseudoRandomBytes(p.random, p.seed);
    if ("repeat" in p) return bytes(p.text.repeat(p.repeat));
    const s = this.#stream(p.stream);
    return s.slice(p.from ?? 0, p.to ?? s.length);
  }

  #build(label: string, s: FrameSpec): BuiltFrame {
    let eth: Uint8Array;
    if (s.hex !== undefined) {
      eth = hexBytes(s.hex);
    } else if (s.arp) {
      eth = arp(s.arp.sender, s.arp.target);
      if (s.vlans || s.srcMac || s.padTo || s.truncate !== undefined) {
        eth = ethernet({ ...s }, 0x0806, eth.subarray(14, 42));
      }
    } else if (s.ethertype !== undefined) {
      eth = ethernet(s, s.ethertype, this.payload(s.l3));
    } else {
      eth = frame(this.#frameOptions(s));
    }
    if (s.padFill !== undefined && s.padTo !== undefined) {
      const unpadded = s.hex !== undefined || s.arp ? eth.length : this.#build(label, {
        ...s,
        padTo: undefined,
        padFill: undefined,
        truncate: undefined,
        vnet: undefined,
      }).data.length;
      eth.fill(s.padFill, Math.min(unpadded, eth.length));
    }
    const vnetLen = s.vnet ?? 0;
    const data = vnetLen > 0 ? withVnet(eth, vnetLen, s.vnetFill ?? 0) : eth;
    return { label, data, vnetLen: s.vnetWord ?? vnetLen };
  }

  #frameOptions(s: FrameSpec): FrameOptions {
    const o: FrameOptions = {
      srcMac: s.srcMac,
      dstMac: s.dstMac,
      vlans: s.vlans,
      padTo: s.padTo,
      truncate: s.truncate,
    };
    if (s.ip) {
      if (s.ip.v === 6) {
        const ip6 = s.ip as Omit<Ip6Options, "ext"> & {
          ext?: (Omit<Ip6Ext, "data"> & { data?: string })[];
        };
        o.ip = {
          ...ip6,
          v: 6,
          ext: ip6.ext?.map((e) => ({
            ...e,
            data: e.data === undefined ? undefined : hexBytes(e.data),
          })),
        };
      } else {
        const ip4 = s.ip as Omit<Ip4Options, "options"> & { options?: string };
        o.ip = { ...ip4, options: ip4.options === undefined ? undefined : hexBytes(ip4.options) };
      }
    }
    if (s.tcp) {
      const t = s.tcp;
      const payload = this.payload(t.payload);
      const from = typeof t.payload === "object" && "stream" in t.payload ? t.payload.from ?? 0 : 0;
      o.tcp = {
        sport: t.sport,
        dport: t.dport,
        seq: (t.seq ?? (t.isn ?? 1000) + from) >>> 0,
        ack: t.ack,
        flags: tcpFlags(t.flags),
        window: t.window,
        options: t.options === undefined ? undefined : hexBytes(t.options),
        payload,
        dataOffset: t.dataOffset,
      };
    } else if (s.udp) {
      o.udp = { ...s.udp, payload: this.payload(s.udp.payload) };
    } else if (s.icmp) {
      o.icmp = { ...s.icmp, payload: this.payload(s.icmp.payload) };
    } else if (s.raw) {
      o.raw = { proto: s.raw.proto, bytes: this.payload(s.raw.bytes) };
    }
    return o;
  }
}

/** The colo framing of frames: u32 BE length [+ u32 BE vnet length] + bytes, back to back. */
export function frameBytes(frames: BuiltFrame[], vnet: boolean): Uint8Array {
  return concat(
    ...frames.map((f) => {
      const head = new Uint8Array(vnet ? 8 : 4);
      const v = new DataView(head.buffer);
      v.setUint32(0, f.data.length);
      if (vnet) v.setUint32(4, f.vnetLen);
      return concat(head, f.data);
    }),
  );
}

/** Parses hex for raw steps. */
export function rawHex(hex: string): Uint8Array {
  return hexBytes(hex);
}

const STEP_ACTIONS = [
  "pri",
  "sec",
  "ntf",
  "raw",
  "pause",
  "wait_ckpt",
  "disconnect",
  "reconnect",
] as const;

/** Checks a scenario's shape and that every label it uses exists; throws a clear message. */
export function validateScenario(s: Scenario, where: string): void {
  const at = `${where}: scenario "${s.name ?? "?"}"`;
  if (typeof s.name !== "string" || !/^[a-z0-9][a-z0-9.-]*$/.test(s.name)) {
    throw new Error(`${at}: name must be lower-case words joined by "-"`);
  }
  if (typeof s.rule !== "string" || s.rule.length < 5) throw new Error(`${at}: rule is missing`);
  if (!Array.isArray(s.steps) || s.steps.length === 0) throw new Error(`${at}: no steps`);
  const book = new FrameBook(s);
  const labels = new Set(book.labels());
  for (const l of labels) {
    try {
      book.get(l);
    } catch (e) {
      throw new Error(`${at}: frame "${l}": ${(e as Error).message}`);
    }
  }
  s.steps.forEach((step, i) => {
    const actions = STEP_ACTIONS.filter((a) => step[a] !== undefined);
    if (actions.length !== 1) {
      throw new Error(`${at}: step ${i} must have exactly one of ${STEP_ACTIONS.join(", ")}`);
    }
    const used = [
      ...[step.pri ?? []].flat(),
      ...[step.sec ?? []].flat(),
      ...(step.raw?.frames ?? []),
    ];
    for (const e of [step as StepExpect, step.qemu ?? {}]) used.push(...(e.out ?? []));
    for (const l of used) {
      if (!labels.has(l)) throw new Error(`${at}: step ${i} names unknown frame "${l}"`);
    }
    if (step.qemu && !s.spec9) throw new Error(`${at}: step ${i} has "qemu" but no "spec9"`);
    if (step.flood !== undefined) {
      const one = [step.pri ?? step.sec ?? []].flat();
      if (!Number.isInteger(step.flood) || step.flood < 1 || one.length !== 1) {
        throw new Error(`${at}: step ${i}: "flood" takes a count and one pri or sec frame`);
      }
    }
  });
}

/** Loads every `*.json` file of a directory as scenario files, in name order. */
export async function loadScenarios(dir: string): Promise<{ file: string; scenario: Scenario }[]> {
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && e.name.endsWith(".json")) files.push(e.name);
  }
  files.sort();
  const out: { file: string; scenario: Scenario }[] = [];
  const names = new Set<string>();
  for (const f of files) {
    const parsed = JSON.parse(await Deno.readTextFile(`${dir}/${f}`)) as ScenarioFile;
    if (!Array.isArray(parsed.scenarios)) throw new Error(`${f}: no "scenarios" array`);
    for (const s of parsed.scenarios) {
      validateScenario(s, f);
      if (names.has(s.name)) throw new Error(`${f}: duplicate scenario name "${s.name}"`);
      names.add(s.name);
      out.push({ file: f, scenario: s });
    }
  }
  return out;
}
