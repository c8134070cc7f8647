/**
 * The comparator as a QOM object for `qom-list`, `qom-get` and `qom-set` (SPEC 12): QEMU's
 * colo-compare property names and types, `compare_timeout`, `expired_scan_cycle` and
 * `max_queue_size` settable at runtime with QEMU's validation, the others read-only.
 *
 * @module
 */

import type { Settings } from "../inside/view.ts";

/** QOM type name, as in QEMU. */
export const TYPE_COLO_COMPARE = "colo-compare";

/** A QMP error: `class` and `desc` as QEMU words them. */
export class QmpError extends Error {
  constructor(readonly errorClass: string, desc: string) {
    super(desc);
  }
}

interface Property {
  type: string;
  get(s: Settings): unknown;
  /** Present for the properties settable at runtime; `max` bounds the integer type. */
  set?: (s: Settings, v: number) => void;
  max?: number;
}

const UINT32_MAX = 2 ** 32 - 1;

/** The properties, in QEMU's order (colo_compare_init). */
const PROPERTIES: Record<string, Property> = {
  type: { type: "string", get: () => TYPE_COLO_COMPARE },
  primary_in: { type: "string", get: (s) => s.endpoints["primary-in"] ?? "" },
  secondary_in: { type: "string", get: (s) => s.endpoints["secondary-in"] ?? "" },
  outdev: { type: "string", get: (s) => s.endpoints["outdev"] ?? "" },
  notify_dev: { type: "string", get: (s) => s.endpoints["notify-dev"] ?? "" },
  compare_timeout: {
    type: "uint64",
    get: (s) => s.compareTimeout,
    set: (s, v) => s.compareTimeout = v,
    // Listed as uint64, but QEMU 7.2's setter visits a uint32 (measured: 2^32 is refused).
    max: UINT32_MAX,
  },
  expired_scan_cycle: {
    type: "uint32",
    get: (s) => s.expiredScanCycle,
    set: (s, v) => s.expiredScanCycle = v,
    max: UINT32_MAX,
  },
  max_queue_size: {
    type: "uint32",
    get: (s) => s.maxQueueSize,
    set: (s, v) => s.maxQueueSize = v,
    max: UINT32_MAX,
  },
  vnet_hdr_support: { type: "bool", get: (s) => s.vnetHdrSupport },
};

/** The object tree: `/`, `/objects`, `/objects/ID`. */
export class QomTree {
  readonly #id: string;
  readonly #settings: Settings;

  constructor(id: string, settings: Settings) {
    this.#id = id;
    this.#settings = settings;
  }

  /** Which node `path` names: QEMU accepts the full path or a unique partial one (the id). */
  #resolve(path: string): "root" | "objects" | "object" {
    const p = path.replace(/\/+$/, "") || "/";
    if (p === "/") return "root";
    if (p === "/objects" || p === "objects") return "objects";
    if (p === `/objects/${this.#id}` || p === this.#id) return "object";
    throw new QmpError("DeviceNotFound", `Device '${path}' not found`);
  }

  list(path: string): { name: string; type: string }[] {
    switch (this.#resolve(path)) {
      case "root":
        return [{ name: "objects", type: "child<container>" }];
      case "objects":
        return [{ name: this.#id, type: `child<${TYPE_COLO_COMPARE}>` }];
      case "object":
        return Object.entries(PROPERTIES).map(([name, p]) => ({ name, type: p.type }));
    }
  }

  #property(path: string, name: string): Property {
    if (this.#resolve(path) !== "object") {
      throw new QmpError("GenericError", `Property 'container.${name}' not found`);
    }
    // Own properties only: "toString" or "__proto__" is no property of ours.
    const p = Object.hasOwn(PROPERTIES, name) ? PROPERTIES[name] : undefined;
    if (p === undefined) {
      throw new QmpError("GenericError", `Property '${TYPE_COLO_COMPARE}.${name}' not found`);
    }
    return p;
  }

  get(path: string, name: string): unknown {
    return this.#property(path, name).get(this.#settings);
  }

  /** Sets a runtime property with QEMU's checks: an integer of the type, and positive. */
  set(path: string, name: string, value: unknown): void {
    const p = this.#property(path, name);
    if (p.set === undefined) {
      throw new QmpError(
        "GenericError",
        `Property '${TYPE_COLO_COMPARE}.${name}' can only be set at start (it is read-only here)`,
      );
    }
    if (typeof value !== "number" || !Number.isInteger(value)) {
      throw new QmpError(
        "GenericError",
        `Invalid parameter type for '${name}', expected: integer`,
      );
    }
    if (value < 0 || value > p.max!) {
      // QEMU 7.2 visits every settable property as a uint32, compare_timeout (a uint64) too.
      throw new QmpError("GenericError", `Parameter '${name}' expects uint32_t`);
    }
    if (value === 0) {
      throw new QmpError(
        "GenericError",
        `Property '${TYPE_COLO_COMPARE}.${name}' requires a positive value`,
      );
    }
    p.set(this.#settings, value);
  }
}
