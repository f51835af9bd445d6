// vlm2mla plot --report R1.json [R2.json ...] --out ERRORS.png
// vlm2mla plot --bench BENCH.jsonl [--metric step|tokens] --out DECODE.png
// Pictures of results people would rather see than read, drawn by gnuplot (gnuplot-nox):
//   --report: each conversion report's activation error per layer, one line per report and modality
//             (e.g. joint vs md at one D, or md at several D);
//   --bench:  decode ms per step (the median step where recorded) of scripts/device/bench_mla.sh's JSON
//             lines, per variant and shape (context x batch, and the image where one is in every context), on
//             a log scale; --metric tokens: decode tokens/s instead (batch / median step, linear scale), as
//             the largest batches are compared.
// The PNG is written to a temporary name and renamed; errors name the file and what was expected.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <tuple>
#include <vector>

#include "common.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "io/json_file.h"

namespace vlm2mla::cli {

namespace {

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '\n') {  // a line break, as gnuplot reads one in a double-quoted string
      out += "\\n";
      continue;
    }
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// A plot's script (png_header's and its plot) drawing to `png`: the terminal, then the output.
std::string drawing_to(const std::string& script, const std::string& png) {
  return "set terminal pngcairo size 1000,600 font 'Sans,11'\nset output " + quote(png) + "\n" + script;
}

// Runs gnuplot on `script` drawing to `out`.tmp; renames that to `out`.
void run_gnuplot(const std::string& script, const std::string& out) {
  const std::string dir = fs::temp_directory() + "/vlm2mla-plot-" + std::to_string(::getpid());
  fs::create_directories(dir);
  const std::string gp = dir + "/plot.gp";
  { std::ofstream(gp) << drawing_to(script, out + ".tmp"); }
  const std::string cmd = "gnuplot " + quote(gp) + " 2>" + quote(dir + "/gnuplot.err");
  const int rc = std::system(cmd.c_str());
  std::string err;
  {
    std::ifstream in(dir + "/gnuplot.err");
    std::stringstream ss;
    ss << in.rdbuf();
    err = ss.str();
  }
  fs::remove_all(dir);
  VLM2MLA_CHECK(rc == 0, IoError, "gnuplot failed (exit ", rc, rc == 127 * 256 ? ": is gnuplot-nox installed?" : "",
                ")", err.empty() ? "" : ": " + err);
  VLM2MLA_CHECK(fs::exists(out + ".tmp") && ::rename((out + ".tmp").c_str(), out.c_str()) == 0, IoError,
                "gnuplot wrote no image to ", out, ".tmp");
}

// The plots' common settings (drawing_to puts the terminal and the output before them).
std::string png_header(const std::string& title) {
  return "set title " + quote(title) + " noenhanced\nset grid\nset key outside right noenhanced\nset yrange [0:*]\n";
}

// One report: {layer -> error} per modality, and a label.
struct Series {
  std::string label;
  std::map<int64_t, double> points;
};

std::vector<Series> report_series(const std::string& path) {
  nlohmann::json r = io::read_json_file(path);
  VLM2MLA_CHECK(r.is_object() && r.contains("layers") && r["layers"].is_array() && r.contains("svd"), FormatError,
                path, ": not a conversion report (expected an object with 'svd' and a 'layers' list, as "
                "`vlm2mla convert --report` writes)");
  std::string base = r["svd"].get<std::string>();
  if (r.contains("kv_rank_per_head") && r["kv_rank_per_head"].is_array() && !r["kv_rank_per_head"].empty()) {
    base += " D=" + std::to_string(r["kv_rank_per_head"][0].get<int64_t>());
  }
  std::map<std::string, Series> by_modality;
  for (const auto& e : r["layers"]) {
    VLM2MLA_CHECK(e.contains("layer") && e.contains("modality") && e.contains("activation_rel_error"), FormatError,
                  path, ": a 'layers' entry lacks layer, modality or activation_rel_error");
    if (e["activation_rel_error"].is_null()) continue;
    const std::string m = e["modality"].get<std::string>();
    by_modality[m].label = base + " (" + m + ")";
    by_modality[m].points[e["layer"].get<int64_t>()] = e["activation_rel_error"].get<double>();
  }
  VLM2MLA_CHECK(!by_modality.empty(), FormatError, path,
                ": the report has no activation errors (convert without --calib records none)");
  std::vector<Series> out;
  for (auto& [m, s] : by_modality) out.push_back(std::move(s));
  return out;
}

std::string plot_reports(const std::vector<std::string>& paths) {
  std::string data, plots;
  int index = 0;
  int64_t layers = 0;
  for (const auto& path : paths) {
    for (const Series& s : report_series(path)) {
      for (const auto& [layer, err] : s.points) {
        data += std::to_string(layer) + " " + std::to_string(err) + "\n";
        layers = std::max(layers, layer + 1);
      }
      data += "\n\n";
      plots += std::string(plots.empty() ? "" : ", ") + "$data index " + std::to_string(index++) +
               " with linespoints title " + quote(s.label);
    }
  }
  return png_header("activation error ||(W - W')X^T|| / ||W X^T|| per layer") +
         (layers <= 40 ? "set xtics 1\n" : "") +
         "set xlabel 'layer'\nset ylabel 'relative activation error'\n$data << EOD\n" + data + "EOD\nplot " + plots + "\n";
}

std::string plot_bench(const std::string& path, const std::string& metric) {
  const bool tokens = metric == "tokens";
  std::ifstream in(path);
  VLM2MLA_CHECK(in.good(), IoError, "cannot read ", path);
  // variant -> shape -> ms/step (tokens: tokens/s); the variants in the order of their first line, the shapes
  // by context, then batch, then image (the order bench_mla.sh's grid or several files' lines came in is not)
  std::map<std::string, std::map<std::string, double>> ms;
  std::vector<std::string> variants;
  std::vector<std::tuple<int64_t, int64_t, std::string, std::string>> shape_keys;  // context, batch, image, label
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;  // the file's line number
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      throw FormatError(detail::concat(path, ": line ", n, " is not JSON: ", e.what()));
    }
    if (!j.contains("result")) continue;  // a failed run
    const auto& r = j["result"];
    // the numbers a line must hold: a clear error naming the file, the line and the key, not a JSON exception
    auto number = [&](const char* key) -> double {
      VLM2MLA_CHECK(r.is_object() && r.contains(key) && r[key].is_number(), FormatError, path, ": line ", n,
                    ": result.", key, " missing or not a number");
      return r[key].get<double>();
    };
    VLM2MLA_CHECK(j.contains("variant") && j["variant"].is_string(), FormatError, path, ": line ", n,
                  ": 'variant' missing or not a string");
    const int64_t context = static_cast<int64_t>(number("context")), batch = static_cast<int64_t>(number("batch"));
    std::string shape = std::to_string(context / 1024) + "k x " + std::to_string(batch), image;
    if (r.contains("image") && r["image"].is_string() && !r["image"].get<std::string>().empty()) {
      image = r["image"].get<std::string>();
      shape += "\n+" + image;  // on a second line of the tic label
    }
    const auto key = std::make_tuple(context, batch, image, shape);
    if (std::find(shape_keys.begin(), shape_keys.end(), key) == shape_keys.end()) shape_keys.push_back(key);
    // The median step (steady state: a CUDA graph's warm-up and capture steps excluded) where recorded;
    // runs of several decode modes are told apart in the legend.
    const double step_ms =
        number(r.contains("decode_ms_per_step_median") ? "decode_ms_per_step_median" : "decode_ms_per_step");
    std::string variant = j["variant"].get<std::string>();
    if (j.contains("decode") && j["decode"].is_string() && j["decode"].get<std::string>() != "graph")
      variant += " (" + j["decode"].get<std::string>() + ")";
    VLM2MLA_CHECK(step_ms > 0, FormatError, path, ": line ", n, ": a decode step of ", step_ms, " ms");
    if (!ms.count(variant)) variants.push_back(variant);
    ms[variant][shape] = tokens ? batch * 1000.0 / step_ms : step_ms;
  }
  std::sort(shape_keys.begin(), shape_keys.end());
  std::vector<std::string> shapes;
  for (const auto& key : shape_keys) shapes.push_back(std::get<3>(key));
  VLM2MLA_CHECK(!ms.empty(), FormatError, path, ": no benchmark results (expected bench_mla.sh's JSON lines with "
                "'variant' and 'result')");
  std::string data = "shape";
  for (const auto& v : variants) data += " " + quote(v);
  data += "\n";
  for (const auto& shape : shapes) {
    data += quote(shape);
    for (const auto& v : variants) {
      const auto& per = ms.at(v);
      data += " " + (per.count(shape) ? std::to_string(per.at(shape)) : std::string("NaN"));
    }
    data += "\n";
  }
  const bool two_line = std::any_of(shapes.begin(), shapes.end(),
                                    [](const std::string& sh) { return sh.find('\n') != std::string::npos; });
  std::string plots;
  for (size_t i = 0; i < ms.size(); ++i) {
    plots += std::string(i ? ", " : "") + "$data using " + std::to_string(i + 2) + ":xtic(1) title columnheader";
  }
  return png_header(tokens ? "decode tokens/s (batch / median step; higher is better)"
                                 : "decode time per step (median step; lower is better)") +
         "set style data histogram\nset style histogram clustered gap 1\nset style fill solid 0.8 border -1\n" +
         (two_line ? "set bmargin 6\nset xtics offset 0,-0.3\n" : "") +
         (tokens ? "set ylabel 'decode tokens/s'\n"
                 : "set logscale y\nset yrange [1:*]\nset ylabel 'ms per decode step (log scale)'\n") +
         "set xlabel 'context x batch'" + (two_line ? " offset 0,-1" : "") + "\n$data << EOD\n" + data +
         "EOD\nplot " + plots + "\n";
}

}  // namespace

void register_plot(CLI::App& app) {
  struct Args {
    std::vector<std::string> reports;
    std::string bench, out, metric = "step", script;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "plot", "Draw conversion reports (activation error per layer) or decode benchmarks as a PNG (gnuplot)");
  auto* reports = cmd->add_option("--report", args->reports, "conversion report(s) from `convert --report`");
  auto* bench = cmd->add_option("--bench", args->bench, "JSON lines of scripts/device/bench_mla.sh");
  reports->excludes(bench);
  cmd->add_option("--metric", args->metric, "with --bench: step (ms per decode step) or tokens (decode tokens/s)")
      ->check(CLI::IsMember({"step", "tokens"}));
  cmd->add_option("--script", args->script,
                  "also write the gnuplot script (its data inline, drawing to --out) to this file, to restyle "
                  "the plot");
  cmd->add_option("--out", args->out, "output .png")->required();
  cmd->callback([args]() {
    VLM2MLA_CHECK(!args->reports.empty() || !args->bench.empty(), ArgumentError,
                  "plot: give --report FILE... or --bench FILE");
    const std::string script =
        args->bench.empty() ? plot_reports(args->reports) : plot_bench(args->bench, args->metric);
    run_gnuplot(script, args->out);
    VLM2MLA_INFO("wrote ", args->out);
    if (!args->script.empty()) {  // the same script drawing to --out itself
      io::write_file_atomic(args->script, drawing_to(script, args->out));
      VLM2MLA_INFO("wrote ", args->script);
    }
  });
}

}  // namespace vlm2mla::cli
