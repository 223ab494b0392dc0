/**
 * The page's live loss chart: one canvas, training loss per step as a line, axes labelled with the step range and
 * the loss range. Plain 2D canvas, redrawn whole on each step (a few hundred points at most). Not here: the data.
 */

/** Draws `losses` (index = step − 1; holes allowed) on `canvas`, the x axis spanning `total` steps. */
export function drawLossChart(canvas: HTMLCanvasElement, losses: readonly number[], total: number): void {
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  const w = canvas.width,
    h = canvas.height,
    pad = 36;
  ctx.clearRect(0, 0, w, h);
  const ys = losses.filter((v) => Number.isFinite(v));
  if (ys.length === 0) return;
  const lo = Math.min(...ys),
    hi = Math.max(...ys);
  const span = hi - lo || 1;
  const x = (i: number) => pad + ((w - 2 * pad) * i) / Math.max(1, total - 1);
  const y = (v: number) => h - pad - ((h - 2 * pad) * (v - lo)) / span;
  ctx.strokeStyle = '#888';
  ctx.beginPath();
  ctx.moveTo(pad, pad);
  ctx.lineTo(pad, h - pad);
  ctx.lineTo(w - pad, h - pad);
  ctx.stroke();
  ctx.fillStyle = '#444';
  ctx.font = '11px sans-serif';
  ctx.fillText(hi.toFixed(3), 2, pad);
  ctx.fillText(lo.toFixed(3), 2, h - pad);
  ctx.fillText('1', pad, h - pad + 14);
  ctx.fillText(String(total), w - pad - 10, h - pad + 14);
  ctx.fillText('loss (nats/byte) by step', pad + 8, 14);
  ctx.strokeStyle = '#c33';
  ctx.lineWidth = 2;
  ctx.beginPath();
  let started = false;
  losses.forEach((v, i) => {
    if (!Number.isFinite(v)) return;
    if (started) ctx.lineTo(x(i), y(v));
    else ctx.moveTo(x(i), y(v));
    started = true;
  });
  ctx.stroke();
}
