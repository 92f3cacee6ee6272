/**
 * Live charts (uPlot) of a node's or a system's stats/ record: the last 10 minutes from
 * cdb.history, then a point for each change the CDB watch brings (every second).
 */
import uPlot from 'uplot';
import { bytes, h } from './dom.js';
import type { RecordView, Store } from './store.js';
import type { Wire } from './wire.js';

const WINDOW_S = 600;

type Sample = Record<string, unknown>;
/** A series' value from this sample and the one before it (rates need both). */
type Extract = (now: Sample, before: Sample | undefined, seconds: number) => number | null;

interface ChartSpec {
  title: string;
  unit: 'percent' | 'bytes' | 'rate' | 'ops';
  series: { label: string; stroke: string; value: Extract }[];
}

const num = (value: unknown): number | null => (typeof value === 'number' && Number.isFinite(value) ? value : null);
const rate = (pick: (sample: Sample) => number | null): Extract => (now, before, seconds) => {
  if (!before || seconds <= 0) return null;
  const a = pick(before);
  const b = pick(now);
  return a === null || b === null || b < a ? null : (b - a) / seconds;
};
const sumNics = (field: string) => (sample: Sample): number | null => {
  const list = Array.isArray(sample.network) ? sample.network : Array.isArray(sample.nics) ? sample.nics : null;
  if (!list) return null;
  return (list as Sample[]).reduce((sum, nic) => sum + (num(nic[field]) ?? 0), 0);
};

/** Network bytes per second, summed over the NICs: the same chart for a node and for a system. */
const NETWORK_CHART: ChartSpec = {
  title: 'Network',
  unit: 'rate',
  series: [
    { label: 'rx', stroke: '#10b981', value: rate(sumNics('rxBytes')) },
    { label: 'tx', stroke: '#f59e0b', value: rate(sumNics('txBytes')) },
  ],
};

export const NODE_CHARTS: ChartSpec[] = [
  { title: 'CPU', unit: 'percent', series: [{ label: 'cpu %', stroke: '#3b82f6', value: (s) => num(s.cpuPercent) }] },
  {
    title: 'Memory',
    unit: 'bytes',
    series: [
      { label: 'used', stroke: '#a855f7', value: (s) => num((s.memory as Sample | undefined)?.usedBytes) },
      { label: 'total', stroke: '#94a3b8', value: (s) => num((s.memory as Sample | undefined)?.totalBytes) },
    ],
  },
  NETWORK_CHART,
  {
    title: 'Disk I/O',
    unit: 'ops',
    series: [
      { label: 'read', stroke: '#06b6d4', value: (s) => num((s.disks as Sample | null)?.readOpsPerSec) },
      { label: 'write', stroke: '#ef4444', value: (s) => num((s.disks as Sample | null)?.writeOpsPerSec) },
    ],
  },
];

export const SYSTEM_CHARTS: ChartSpec[] = [
  { title: 'CPU', unit: 'percent', series: [{ label: 'cpu %', stroke: '#3b82f6', value: (s) => num(s.cpuPercent) }] },
  { title: 'Memory', unit: 'bytes', series: [{ label: 'rss', stroke: '#a855f7', value: (s) => num(s.rssBytes) }] },
  NETWORK_CHART,
  {
    title: 'Disk I/O',
    unit: 'rate',
    series: [
      { label: 'read', stroke: '#06b6d4', value: rate((s) => num(s.readBytes)) },
      { label: 'write', stroke: '#ef4444', value: rate((s) => num(s.writeBytes)) },
    ],
  },
];

const format = (unit: ChartSpec['unit'], value: number | null): string => {
  if (value === null) return '–';
  if (unit === 'percent') return `${value.toFixed(1)} %`;
  if (unit === 'bytes') return bytes(value);
  if (unit === 'rate') return `${bytes(value)}/s`;
  return `${value.toFixed(0)}/s`;
};

class Chart {
  readonly element: HTMLElement;
  private readonly plot: uPlot;
  private readonly data: number[][];
  private readonly readout: HTMLElement;

  constructor(private readonly spec: ChartSpec, width: number) {
    this.data = [[], ...spec.series.map(() => [])];
    this.readout = h('span.readout');
    const body = h('div.plot');
    this.element = h('figure.chart', { dataset: { chart: spec.title } }, h('figcaption', {}, spec.title, ' ', this.readout), body);
    // A canvas takes colours, not CSS variables: the theme's, read now.
    const css = getComputedStyle(document.documentElement);
    const muted = css.getPropertyValue('--muted').trim() || '#667085';
    const grid = css.getPropertyValue('--grid').trim() || '#eceff3';
    const axis = { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    this.plot = new uPlot(
      {
        width,
        height: 140,
        legend: { show: false },
        cursor: { show: true },
        scales: { x: { time: true } },
        axes: [axis, { ...axis, size: (_u, labels) => 18 + 7 * Math.max(5, ...(labels ?? []).map((label) => String(label).length)), values: (_u, ticks) => ticks.map((tick) => format(spec.unit, tick)) }],
        series: [{}, ...spec.series.map((series) => ({ label: series.label, stroke: series.stroke, width: 1.5, points: { show: false } }))],
      },
      this.data as uPlot.AlignedData,
      body,
    );
  }

  push(at: number, values: (number | null)[]): void {
    const [times, ...columns] = this.data as [number[], ...(number | null)[][]];
    times.push(at);
    values.forEach((value, index) => columns[index]!.push(value));
    while (times.length > 0 && times[0]! < at - WINDOW_S) {
      times.shift();
      for (const column of columns) column.shift();
    }
    this.readout.textContent = this.spec.series.map((series, index) => `${series.label} ${format(this.spec.unit, values[index] ?? null)}`).join(' · ');
    this.element.dataset.points = String(times.length);
  }

  redraw(): void {
    this.plot.setData(this.data as uPlot.AlignedData);
  }

  resize(width: number): void {
    this.plot.setSize({ width, height: 140 });
  }

  destroy(): void {
    this.plot.destroy();
  }
}

/** The four charts of one stats key, live until `destroy`. */
export class ChartPanel {
  readonly element: HTMLElement;
  private readonly charts: Chart[];
  private previous: { at: number; sample: Sample } | undefined;
  private readonly unlisten: () => void;
  private readonly observer: ResizeObserver;

  constructor(
    key: string,
    private readonly specs: ChartSpec[],
    store: Store,
    wire: Wire,
    node: string,
  ) {
    this.element = h('div.charts', { dataset: { key } });
    const width = this.chartWidth();
    this.charts = specs.map((spec) => new Chart(spec, width));
    this.element.append(...this.charts.map((chart) => chart.element));
    this.observer = new ResizeObserver(() => this.charts.forEach((chart) => chart.resize(this.chartWidth())));
    this.observer.observe(this.element);
    const live: RecordView[] = [];
    let loaded = false;
    this.unlisten = store.listen((record) => {
      if (record.key !== key || record.deleted) return;
      if (loaded) this.take(record.value as Sample, true);
      else live.push(record);
    });
    void wire
      .ask<{ type: string; points: { at: number; value: unknown }[] }>(wire.path(node, 'cdb'), { type: 'cdb.history', key })
      .then((reply) => reply.points.map((point) => point.value as Sample))
      .catch(() => [] as Sample[])
      .then((history) => {
        const current = store.value<Sample>(key);
        for (const sample of history) this.take(sample, false);
        for (const record of live) this.take(record.value as Sample, false);
        if (history.length === 0 && live.length === 0 && current) this.take(current, false);
        loaded = true;
        this.charts.forEach((chart) => chart.redraw());
      });
  }

  private chartWidth(): number {
    const width = this.element.clientWidth || 600;
    return Math.max(260, Math.floor(width >= 900 ? width / 2 - 24 : width - 16));
  }

  private take(sample: Sample, redraw: boolean): void {
    const at = Date.parse(String(sample.at)) / 1000;
    if (!Number.isFinite(at) || (this.previous && at <= this.previous.at)) return;
    const seconds = this.previous ? at - this.previous.at : 0;
    this.charts.forEach((chart, index) => chart.push(at, this.specs[index]!.series.map((series) => series.value(sample, this.previous?.sample, seconds))));
    this.previous = { at, sample };
    if (redraw) this.charts.forEach((chart) => chart.redraw());
  }

  destroy(): void {
    this.unlisten();
    this.observer.disconnect();
    this.charts.forEach((chart) => chart.destroy());
  }
}
