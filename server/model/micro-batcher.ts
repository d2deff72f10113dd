import { channel } from "node:diagnostics_channel";
import { addStage, cancelledError, currentContext, type RequestContext } from "../observe/request-context.js";

/** What `nosepaw:batch` carries for every model run. */
export interface BatchRecord {
  size: number;
  /** Milliseconds the run took. */
  ms: number;
  /** Items still waiting when the run started. */
  queued: number;
}

export const batchChannel = channel("nosepaw:batch");

/**
 * Collects items that arrive close together and hands them to `run` as one
 * batch. Runs never overlap, so a burst that arrives while a batch is
 * running forms the next batch instead of competing for the same cores.
 *
 * With `windowMs` 0 (the default) an item that finds the model idle runs at
 * once: batching then costs a lone caller nothing, and under load batches
 * form by themselves from what arrived during the previous run. A positive
 * window makes the first item of a batch wait that long for company, which
 * only pays when requests arrive in tight bursts on an idle model.
 */
export function createMicroBatcher<In, Out>(opts: {
  windowMs: number;
  maxBatch: number;
  run: (items: In[]) => Promise<Out[]>;
}): (item: In) => Promise<Out> {
  type Pending = { item: In; resolve: (o: Out) => void; reject: (e: unknown) => void; ctx: RequestContext | undefined; at: number };
  let queue: Pending[] = [];
  let timer: { cancel(): void } | undefined;
  let running = false;

  const flush = async () => {
    timer = undefined;
    if (running || queue.length === 0) return;
    // Calls that ended while waiting get no inference: nobody would receive it.
    queue = queue.filter((p) => {
      const signal = p.ctx?.signal;
      if (!signal?.aborted) return true;
      p.reject(cancelledError(signal));
      return false;
    });
    if (queue.length === 0) return;
    running = true;
    const batch = queue.slice(0, opts.maxBatch);
    queue = queue.slice(batch.length);
    const started = performance.now();
    for (const p of batch) {
      addStage("batch_wait", started - p.at, p.ctx);
      if (p.ctx) p.ctx.batchSize = batch.length;
    }
    try {
      const out = await opts.run(batch.map((p) => p.item));
      batch.forEach((p, i) => p.resolve(out[i]));
    } catch (e) {
      batch.forEach((p) => p.reject(e));
    } finally {
      const ms = performance.now() - started;
      for (const p of batch) addStage("inference", ms, p.ctx);
      if (batchChannel.hasSubscribers) batchChannel.publish({ size: batch.length, ms, queued: queue.length } satisfies BatchRecord);
      running = false;
      if (queue.length > 0) schedule(queue.length >= opts.maxBatch ? 0 : opts.windowMs);
    }
  };

  const schedule = (ms: number) => {
    if (timer !== undefined) return;
    // setImmediate rather than a 0 ms timer: items handed over in the same
    // turn of the event loop still join, without a timer's 1 ms floor.
    if (ms > 0) {
      const t = setTimeout(() => void flush(), ms);
      timer = { cancel: () => clearTimeout(t) };
    } else {
      const t = setImmediate(() => void flush());
      timer = { cancel: () => clearImmediate(t) };
    }
  };

  const cancel = () => {
    timer?.cancel();
    timer = undefined;
  };

  return (item) =>
    new Promise<Out>((resolve, reject) => {
      queue.push({ item, resolve, reject, ctx: currentContext(), at: performance.now() });
      if (running) return;
      if (queue.length >= opts.maxBatch) {
        cancel();
        void flush();
      } else schedule(opts.windowMs);
    });
}
