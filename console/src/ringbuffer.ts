/**
 * A fixed-capacity ring of items: pushing onto a full ring evicts the oldest
 * item and counts it in `dropped`. The page keeps every history it shows in
 * one of these, so its memory does not grow however long it stays open.
 */
export class RingBuffer<T> {
  private readonly items: (T | undefined)[];
  private start = 0;
  private size = 0;
  /** Items evicted, or counted without being stored (see `skip`). */
  dropped = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`ring buffer capacity must be a positive integer, got ${capacity}`);
    }
    this.items = new Array<T | undefined>(capacity).fill(undefined);
  }

  /** Number of items held. */
  get length(): number {
    return this.size;
  }

  /** Appends, evicting the oldest item when full. */
  push(item: T): void {
    if (this.size < this.capacity) {
      this.items[(this.start + this.size) % this.capacity] = item;
      this.size += 1;
    } else {
      this.items[this.start] = item;
      this.start = (this.start + 1) % this.capacity;
      this.dropped += 1;
    }
  }

  /** Counts `n` items as dropped without storing them (they would not fit). */
  skip(n: number): void {
    this.dropped += n;
  }

  /** The `i`-th item, 0 = oldest. */
  at(i: number): T | undefined {
    if (i < 0 || i >= this.size) return undefined;
    return this.items[(this.start + i) % this.capacity];
  }

  /** The newest item. */
  last(): T | undefined {
    return this.at(this.size - 1);
  }

  /** Removes every item (the dropped count stays; reset it by hand). */
  clear(): void {
    this.items.fill(undefined);
    this.start = 0;
    this.size = 0;
  }
}
