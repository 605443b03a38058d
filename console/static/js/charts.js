// Chart.js (vendored, window.Chart) with the console's fonts and colours; every chart a page makes is
// registered so the page can destroy them when it is left.

export const PALETTE = ['#07a35a', '#2f6fdc', '#f08c00', '#d63939', '#7048e8', '#12b886', '#e64980', '#5c940d', '#868e96', '#1098ad'];
export const DECISION_COLOURS = {
  sent: ['#07a35a', '#38c172', '#82d9a6'],
  deferred: ['#f08c00', '#ffa94d', '#ffc078', '#ffd8a8'],
  dropped: ['#d63939', '#f06565', '#f59f9f', '#c92a2a', '#ffa8a8'],
  skipped: ['#adb5bd', '#ced4da', '#868e96'],
};

function configure() {
  const Chart = window.Chart;
  Chart.defaults.font.family = getComputedStyle(document.documentElement).fontFamily;
  Chart.defaults.font.size = 12;
  Chart.defaults.color = '#5f6670';
  Chart.defaults.plugins.legend.labels.boxWidth = 12;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.animation = false; // dashboards are read, not watched
}

export class Charts {
  constructor() { this.charts = new Map(); }

  /** Draw (or redraw) the chart `key` into `canvas`. */
  draw(key, canvas, config) {
    if (!window.Chart) throw new Error('图表库没有加载');
    if (!Charts.configured) { configure(); Charts.configured = true; }
    this.charts.get(key)?.destroy();
    const chart = new window.Chart(canvas, config);
    this.charts.set(key, chart);
    return chart;
  }

  destroy() { for (const chart of this.charts.values()) chart.destroy(); this.charts.clear(); }
}
