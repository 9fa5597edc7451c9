// How a released number is written: a noisy count with its 95 % interval, a suppressed one as
// "<k" (never 0 or blank), a hub's combined number with a suppressed part as its bounds.

/** The text of one count or cell; `k` is the minimum cell size of an exact answer. */
export function countText(entry, k) {
  if (!entry) return "—";
  if (entry.count != null) {
    if (Array.isArray(entry.interval)) return `${entry.count} (${entry.interval[0]}–${entry.interval[1]})`;
    return String(entry.count);
  }
  if (entry.lower != null) {
    return entry.upper == null ? `≥ ${entry.lower}` : `${entry.lower}–${entry.upper}`;
  }
  if (entry.bound) return entry.bound;
  if (entry.suppressed) return `<${k || 10}`;
  return "—";
}

/** A short word for screen readers and the title attribute: what kind of number it is. */
export function countKind(entry) {
  if (!entry) return "";
  if (entry.count != null) return Array.isArray(entry.interval) ? "noisy, 95 % interval" : "exact";
  if (entry.lower != null) return "interval: a part is suppressed";
  if (entry.suppressed) return "suppressed: fewer than the minimum cell size";
  return "";
}

/** A value (bin or category) as a label: "[60, 70)", "F", "(outside)". */
export function valueText(value, labels) {
  if (value && typeof value === "object" && "low" in value) return `${value.low}–${value.high}`;
  if (labels && labels(value)) return labels(value);
  return String(value);
}

export function epsilonText(epsilon) {
  return `ε ${Number(epsilon).toFixed(2)}`;
}
