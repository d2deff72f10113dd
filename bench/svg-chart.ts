/**
 * Horizontal bar charts as standalone SVG text: grouped bars (one colour per
 * series) or stacked bars (segments summing to a whole), a legend, values at
 * the bar ends and optional goal marks. No dependencies: the figures are
 * few, and an SVG is text a reviewer can diff.
 */

export interface Bar {
  series: string;
  value: number;
  /** Text after the bar; default: the value and unit. */
  label?: string;
}

export interface BarGroup {
  label: string;
  bars: Bar[];
  /** A vertical mark across the group, e.g. a goal. */
  mark?: { value: number; label: string };
}

export interface ChartOptions {
  title: string;
  /** Second line: machine, threads, what was measured. */
  subtitle: string;
  unit: string;
  groups: BarGroup[];
  /** stacked: a group's bars are segments of one bar. */
  stacked?: boolean;
}

const PALETTE = ["#2f6db5", "#e08a2c", "#4a9c5d", "#b54a4a", "#7d5bb5", "#8c8c3c", "#3c8c8c", "#b56fa3", "#6b6b6b"];
const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const num = (v: number) =>
  v === 0 ? "0" : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(3);

/** A tidy axis end: 1, 2 or 5 times a power of ten at or above `max`. */
function niceMax(max: number): number {
  if (!(max > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  return ([1, 2, 5, 10].find((m) => m * p >= max) ?? 10) * p;
}

export function barChart(o: ChartOptions): string {
  const series = [...new Set(o.groups.flatMap((g) => g.bars.map((b) => b.series)))];
  const colour = (s: string) => PALETTE[series.indexOf(s) % PALETTE.length];
  const width = 760;
  const left = 150;
  const right = 150;
  const barH = 16;
  const gap = 14;
  const top = 58 + 18 * Math.ceil(series.length / 4);
  const plotW = width - left - right;
  const totals = o.groups.map((g) =>
    o.stacked ? g.bars.reduce((s, b) => s + Math.max(0, b.value), 0) : Math.max(0, ...g.bars.map((b) => b.value)),
  );
  const marks = o.groups.map((g) => g.mark?.value ?? 0);
  const max = niceMax(Math.max(...totals.filter(Number.isFinite), ...marks, 0));
  const x = (v: number) => left + (Math.max(0, v) / max) * plotW;
  const rowsOf = (g: BarGroup) => (o.stacked ? 1 : g.bars.length);
  const height = top + o.groups.reduce((s, g) => s + rowsOf(g) * barH + gap, 0) + 40;

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="10" y="20" font-size="15" font-weight="bold">${esc(o.title)}</text>`,
    `<text x="10" y="38" fill="#555">${esc(o.subtitle)}</text>`,
  ];
  series.forEach((s, i) => {
    const lx = 10 + (i % 4) * 185;
    const ly = 52 + 18 * Math.floor(i / 4);
    out.push(`<rect x="${lx}" y="${ly}" width="12" height="12" fill="${colour(s)}"/><text x="${lx + 17}" y="${ly + 10}">${esc(s)}</text>`);
  });
  let y = top;
  for (const g of o.groups) {
    const h = rowsOf(g) * barH;
    out.push(`<text x="${left - 8}" y="${y + h / 2 + 4}" text-anchor="end">${esc(g.label)}</text>`);
    if (o.stacked) {
      let acc = 0;
      for (const b of g.bars) {
        if (!(b.value > 0)) continue;
        out.push(
          `<rect x="${x(acc).toFixed(1)}" y="${y}" width="${(x(acc + b.value) - x(acc)).toFixed(1)}" height="${barH - 2}" fill="${colour(b.series)}"><title>${esc(`${b.series}: ${num(b.value)} ${o.unit}`)}</title></rect>`,
        );
        acc += b.value;
      }
      out.push(`<text x="${x(acc) + 4}" y="${y + barH - 5}" fill="#333">${esc(`${num(acc)} ${o.unit}`)}</text>`);
    } else {
      g.bars.forEach((b, i) => {
        const by = y + i * barH;
        const v = Number.isFinite(b.value) ? b.value : 0;
        out.push(`<rect x="${left}" y="${by}" width="${(x(v) - left).toFixed(1)}" height="${barH - 2}" fill="${colour(b.series)}"/>`);
        out.push(
          `<text x="${x(v) + 4}" y="${by + barH - 5}" fill="#333">${esc(b.label ?? (Number.isFinite(b.value) ? `${num(b.value)} ${o.unit}` : "n/a"))}</text>`,
        );
      });
    }
    if (g.mark) {
      const mx = x(g.mark.value).toFixed(1);
      out.push(`<line x1="${mx}" x2="${mx}" y1="${y - 3}" y2="${y + h + 1}" stroke="#c00" stroke-width="2" stroke-dasharray="4 2"/>`);
      out.push(`<text x="${mx}" y="${y - 4}" fill="#c00" font-size="10" text-anchor="middle">${esc(g.mark.label)}</text>`);
    }
    y += h + gap;
  }
  out.push(`<line x1="${left}" x2="${left}" y1="${top - 6}" y2="${y - gap + 4}" stroke="#999"/>`);
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    out.push(`<text x="${x(v)}" y="${y + 12}" fill="#777" font-size="10" text-anchor="middle">${num(v)}</text>`);
  }
  out.push(`<text x="${left + plotW / 2}" y="${y + 28}" fill="#555" text-anchor="middle">${esc(o.unit)}</text>`);
  out.push("</svg>");
  return out.join("\n") + "\n";
}
