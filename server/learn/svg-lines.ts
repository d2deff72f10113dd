/**
 * Line charts as standalone SVG text, for the learning loop's report: a few
 * series of (x, y) points, linear or log axes, vertical marks. No
 * dependencies, like bench/svg-chart.ts (which draws bar charts).
 */

export interface Series {
  name: string;
  points: [number, number][];
  dashed?: boolean;
}

export interface LineChartOptions {
  title: string;
  subtitle: string;
  x: { label: string; log?: boolean; min: number; max: number };
  y: { label: string; log?: boolean; min: number; max: number };
  series: Series[];
  /** Vertical marks, e.g. a chosen threshold. */
  marks?: { x: number; label: string }[];
}

const PALETTE = ["#2f6db5", "#e08a2c", "#4a9c5d", "#b54a4a", "#7d5bb5", "#6b6b6b"];
const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const W = 640;
const H = 400;
const L = 70;
const R = 180;
const T = 56;
const B = 50;

function ticks(min: number, max: number, log: boolean): number[] {
  if (log) {
    const out: number[] = [];
    for (let e = Math.ceil(Math.log10(min)); e <= Math.floor(Math.log10(max)); e++) out.push(10 ** e);
    return out;
  }
  const step = [0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10].find((s) => (max - min) / s <= 8) ?? (max - min) / 5;
  const out: number[] = [];
  for (let v = Math.ceil(min / step - 1e-9) * step; v <= max + 1e-9; v += step) out.push(Number(v.toFixed(6)));
  return out;
}

const tickText = (v: number, log: boolean) =>
  log ? v.toExponential(0).replace("e+0", "").replace("e+", "e") : Number(v.toFixed(2)).toString();

export function lineChart(o: LineChartOptions): string {
  const scale = (a: LineChartOptions["x"], size: number, flip: boolean) => (v: number) => {
    const lo = a.log ? Math.log10(a.min) : a.min;
    const hi = a.log ? Math.log10(a.max) : a.max;
    const c = Math.min(Math.max(a.log ? Math.log10(Math.max(v, a.min)) : v, lo), hi);
    const f = (c - lo) / (hi - lo || 1);
    return flip ? size * (1 - f) : size * f;
  };
  const pw = W - L - R;
  const ph = H - T - B;
  const sx = scale(o.x, pw, false);
  const sy = scale(o.y, ph, true);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${L}" y="20" font-size="14" font-weight="bold">${esc(o.title)}</text>`,
    `<text x="${L}" y="38" fill="#555">${esc(o.subtitle)}</text>`,
    `<g transform="translate(${L},${T})">`,
    `<rect width="${pw}" height="${ph}" fill="none" stroke="#999"/>`,
  ];
  for (const v of ticks(o.x.min, o.x.max, !!o.x.log)) {
    const x = sx(v).toFixed(1);
    out.push(`<line x1="${x}" x2="${x}" y1="0" y2="${ph}" stroke="#eee"/>`);
    out.push(`<text x="${x}" y="${ph + 15}" text-anchor="middle">${tickText(v, !!o.x.log)}</text>`);
  }
  for (const v of ticks(o.y.min, o.y.max, !!o.y.log)) {
    const y = sy(v).toFixed(1);
    out.push(`<line x1="0" x2="${pw}" y1="${y}" y2="${y}" stroke="#eee"/>`);
    out.push(`<text x="-6" y="${y}" text-anchor="end" dominant-baseline="middle">${tickText(v, !!o.y.log)}</text>`);
  }
  out.push(`<text x="${pw / 2}" y="${ph + 36}" text-anchor="middle">${esc(o.x.label)}</text>`);
  out.push(`<text transform="translate(-52,${ph / 2}) rotate(-90)" text-anchor="middle">${esc(o.y.label)}</text>`);
  for (const m of o.marks ?? []) {
    const x = sx(m.x).toFixed(1);
    out.push(`<line x1="${x}" x2="${x}" y1="0" y2="${ph}" stroke="#b54a4a" stroke-dasharray="2,3"/>`);
    out.push(`<text x="${x}" y="-4" text-anchor="middle" fill="#b54a4a">${esc(m.label)}</text>`);
  }
  o.series.forEach((s, i) => {
    const colour = PALETTE[i % PALETTE.length];
    const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    const d = pts.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
    out.push(`<polyline points="${d}" fill="none" stroke="${colour}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6,4"' : ""}/>`);
    for (const [x, y] of pts) out.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="2.5" fill="${colour}"/>`);
    const ly = 10 + i * 18;
    out.push(
      `<line x1="${pw + 12}" x2="${pw + 32}" y1="${ly}" y2="${ly}" stroke="${colour}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6,4"' : ""}/>`,
    );
    out.push(`<text x="${pw + 36}" y="${ly}" dominant-baseline="middle">${esc(s.name)}</text>`);
  });
  out.push("</g>", "</svg>");
  return out.join("\n") + "\n";
}
