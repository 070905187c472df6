// A minimal matcher for the 5-field UTC cron expressions that Scaleway cron triggers take.

function fieldMatches(field: string, value: number, min: number, max: number): boolean {
  return field.split(',').some((part) => {
    const [range, stepText] = part.split('/');
    const step = stepText ? Number(stepText) : 1;
    let lo: number;
    let hi: number;
    if (range === '*') [lo, hi] = [min, max];
    else if (range!.includes('-')) [lo, hi] = range!.split('-').map(Number) as [number, number];
    else [lo, hi] = [Number(range), stepText ? max : Number(range)];
    return value >= lo && value <= hi && (value - lo) % step === 0;
  });
}

/** Whether `expr` (minute hour day-of-month month day-of-week) fires at the minute of `at` (UTC). */
export function cronMatches(expr: string, at: Date): boolean {
  const [m, h, dom, mon, dow] = expr.trim().split(/\s+/);
  const day = at.getUTCDay();
  return (
    fieldMatches(m!, at.getUTCMinutes(), 0, 59) &&
    fieldMatches(h!, at.getUTCHours(), 0, 23) &&
    fieldMatches(dom!, at.getUTCDate(), 1, 31) &&
    fieldMatches(mon!, at.getUTCMonth() + 1, 1, 12) &&
    (fieldMatches(dow!, day, 0, 7) || (day === 0 && fieldMatches(dow!, 7, 0, 7)))
  );
}
