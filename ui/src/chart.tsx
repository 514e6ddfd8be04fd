/** One live line chart (uPlot), redrawn in place when its data changes. */
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { latest, type ChartData, type ChartSpec } from './lib/series.js';

const COLORS = ['#2563eb', '#dc2626', '#059669', '#d97706'];
const HEIGHT_PX = 160;

/** What the chart draws from a spec: its id, title, unit and line labels (values come in `data`). */
export type ChartLook = Pick<ChartSpec, 'id' | 'title' | 'unit'> & { lines: ReadonlyArray<{ label: string }> };

export function Chart({ spec, data }: { spec: ChartLook; data: ChartData }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);

  useEffect(() => {
    const el = box.current;
    if (el === null) return;
    const p = new uPlot({
      width: Math.max(200, el.clientWidth),
      height: HEIGHT_PX,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (_u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] } },
      axes: [{}, { size: 50, values: (_u, ticks) => ticks.map((t) => `${+t.toFixed(2)}`) }],
      series: [{}, ...spec.lines.map((l, i) => ({ label: l.label, stroke: COLORS[i % COLORS.length] ?? '#000', width: 2, spanGaps: false }))],
    }, data, el);
    plot.current = p;
    const ro = new ResizeObserver(() => p.setSize({ width: Math.max(200, el.clientWidth), height: HEIGHT_PX }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      p.destroy();
      plot.current = null;
    };
  }, [spec]);

  useEffect(() => {
    plot.current?.setData(data);
  }, [data]);

  const now = latest(data);
  return (
    <figure class="chart" data-chart={spec.id} data-points={data[0].length}>
      <figcaption>
        {spec.title}{spec.unit ? ` (${spec.unit})` : ''}:{' '}
        <span class="now">{spec.lines.map((l, i) => `${l.label} ${now[i] === null || now[i] === undefined ? '–' : +(now[i] ?? 0).toFixed(2)}`).join(' · ')}</span>
      </figcaption>
      <div ref={box} />
    </figure>
  );
}
