/* Draws one small Plotly line chart per .trend-chart container.
 * The data comes from the page's <script id="trend-data" type="application/json"> (json_script),
 * so no patient data is ever interpolated into JavaScript source. */
(function () {
  "use strict";

  function drawTrends() {
    var source = document.getElementById("trend-data");
    if (!source || typeof window.Plotly === "undefined") {
      return;
    }
    var charts = JSON.parse(source.textContent);
    var byCode = {};
    charts.forEach(function (chart) {
      byCode[chart.code] = chart;
    });

    document.querySelectorAll(".trend-chart").forEach(function (container) {
      var chart = byCode[container.dataset.code];
      if (!chart) {
        return;
      }
      var trace = {
        x: chart.x,
        y: chart.y,
        type: "scatter",
        mode: chart.x.length > 60 ? "lines" : "lines+markers",
        line: { color: "#1f5f8b", width: 2 },
        marker: { size: 5 },
        hovertemplate: "%{x|%Y-%m-%d}: %{y} " + (chart.unit || "") + "<extra></extra>",
      };
      var layout = {
        height: 200,
        margin: { l: 48, r: 12, t: 8, b: 32 },
        xaxis: { type: "date", tickformat: "%Y-%m", gridcolor: "#e5e9ee" },
        yaxis: { title: { text: chart.unit || "" }, gridcolor: "#e5e9ee", zeroline: false },
        paper_bgcolor: "rgba(0,0,0,0)",
        plot_bgcolor: "rgba(0,0,0,0)",
        font: { family: "system-ui, sans-serif", size: 11, color: "#1c2733" },
        showlegend: false,
      };
      window.Plotly.newPlot(container, [trace], layout, { displayModeBar: false, responsive: true });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawTrends);
  } else {
    drawTrends();
  }
})();
