export interface BackoffOptions {
  /** Delay before the first retry, in ms (before jitter). Default 500. */
  baseMs?: number;
  /** Upper bound of any delay, in ms. Default 15000. */
  capMs?: number;
  /** Growth factor per failed attempt. Default 2. */
  factor?: number;
  /**
   * Fraction of the delay that is randomised, 0..1. Default 0.5: the delay is drawn uniformly
   * from [d * (1 - jitter), d]. With 0 every client retries in lock step after a server restart.
   */
  jitter?: number;
}

export const DEFAULT_BACKOFF: Required<BackoffOptions> = {
  baseMs: 500,
  capMs: 15000,
  factor: 2,
  jitter: 0.5,
};

/**
 * Delay before retry number `attempt` (0 for the first retry after a drop).
 * Exponential, capped, with jitter; `random` is injectable for tests.
 */
export function backoffDelay(
  attempt: number,
  opts: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  const { baseMs, capMs, factor, jitter } = { ...DEFAULT_BACKOFF, ...opts };
  const exp = Math.min(capMs, baseMs * Math.pow(factor, Math.max(0, attempt)));
  const j = Math.min(1, Math.max(0, jitter));
  const r = Math.min(1, Math.max(0, random()));
  return Math.round(exp * (1 - j) + exp * j * r);
}
