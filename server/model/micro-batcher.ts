/**
 * Collects items that arrive close together and hands them to `run` as one
 * batch: the first item opens a window of `windowMs`; the batch closes when
 * the window ends or `maxBatch` items are in. Runs never overlap, so a burst
 * that arrives while a batch is running forms the next batch instead of
 * competing for the same cores.
 */
export function createMicroBatcher<In, Out>(opts: {
  windowMs: number;
  maxBatch: number;
  run: (items: In[]) => Promise<Out[]>;
}): (item: In) => Promise<Out> {
  type Pending = { item: In; resolve: (o: Out) => void; reject: (e: unknown) => void };
  let queue: Pending[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running = false;

  const flush = async () => {
    timer = undefined;
    if (running || queue.length === 0) return;
    running = true;
    const batch = queue.slice(0, opts.maxBatch);
    queue = queue.slice(batch.length);
    try {
      const out = await opts.run(batch.map((p) => p.item));
      batch.forEach((p, i) => p.resolve(out[i]));
    } catch (e) {
      batch.forEach((p) => p.reject(e));
    } finally {
      running = false;
      if (queue.length > 0) schedule(queue.length >= opts.maxBatch ? 0 : opts.windowMs);
    }
  };

  const schedule = (ms: number) => {
    if (timer !== undefined) return;
    timer = setTimeout(() => void flush(), ms);
  };

  return (item) =>
    new Promise<Out>((resolve, reject) => {
      queue.push({ item, resolve, reject });
      if (running) return;
      if (queue.length >= opts.maxBatch) {
        if (timer !== undefined) clearTimeout(timer);
        timer = undefined;
        void flush();
      } else schedule(opts.windowMs);
    });
}
