/**
 * Loaded into a benchmarked server process with `node --import`: counts the
 * model runs published on `nosepaw:batch` and answers "batch-stats" messages
 * on the IPC channel the benchmark opened, so batch sizes are read from the
 * server itself without changing it. Does nothing without an IPC channel.
 */
import { subscribe } from "node:diagnostics_channel";

if (process.send) {
  const stats = { runs: 0, items: 0, maxSize: 0, ms: 0 };
  subscribe("nosepaw:batch", (m) => {
    const b = m as { size: number; ms: number };
    stats.runs++;
    stats.items += b.size;
    stats.ms += b.ms;
    stats.maxSize = Math.max(stats.maxSize, b.size);
  });
  process.on("message", (m) => {
    if (m === "batch-stats") process.send!({ ...stats });
  });
  // The channel must not keep a stopping server alive.
  process.channel?.unref();
}
