/**
 * The trials of the soak suite, in the order they run.
 *
 * @module
 */

import type { Trial } from "../trial.ts";
import { checkpointStorm } from "./checkpoint_storm.ts";
import { churn } from "./churn.ts";
import { conservation } from "./conservation.ts";
import { heldBound } from "./held_bound.ts";
import { idleClients } from "./idle_clients.ts";
import { notifyNonReader } from "./notify_nonreader.ts";
import { onePeer } from "./one_peer.ts";
import { sigtermConnect } from "./sigterm_connect.ts";
import { slowOutdev } from "./slow_outdev.ts";
import { tableFull } from "./table_full.ts";

/** Every trial, by number. */
export const TRIALS: Trial[] = [
  tableFull,
  slowOutdev,
  checkpointStorm,
  heldBound,
  notifyNonReader,
  sigtermConnect,
  churn,
  conservation,
  onePeer,
  idleClients,
];
