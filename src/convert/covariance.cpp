#include "convert/covariance.h"

#include "core/error.h"

namespace vlm2mla::convert {

const char* modality_name(Modality m) {
  switch (m) {
    case Modality::kText: return "text";
    case Modality::kImage: return "image";
  }
  return "?";
}

CovarianceObserver::CovarianceObserver(int64_t layers, int64_t hidden, at::Device device) {
  for (int m = 0; m < 2; ++m) {
    for (int64_t l = 0; l < layers; ++l) {
      sum_[m].push_back(at::zeros({hidden, hidden}, at::TensorOptions().dtype(at::kDouble).device(device)));
    }
    layer_count_[m].assign(static_cast<size_t>(layers), 0);
  }
}

void CovarianceObserver::attention_input(int64_t layer, const at::Tensor& x, const at::Tensor& valid,
                                         const at::Tensor& image) {
  const int64_t d = x.size(-1);
  at::Tensor flat = x.reshape({-1, d});  // [b*s, d]
  at::Tensor keep = valid.reshape({-1}).to(x.device());
  at::Tensor img = image.defined() ? image.reshape({-1}).to(x.device()).to(at::kBool)
                                   : at::zeros_like(keep, keep.options().dtype(at::kBool));
  for (int m = 0; m < 2; ++m) {
    at::Tensor sel = keep.logical_and(m == 1 ? img : img.logical_not());
    at::Tensor rows = flat.index_select(0, sel.nonzero().squeeze(1));  // [n, d]
    if (rows.size(0) == 0) continue;
    at::Tensor r = rows.to(sum_[m][static_cast<size_t>(layer)].device(), at::kDouble);
    sum_[m][static_cast<size_t>(layer)].addmm_(r.t(), r);
    layer_count_[m][static_cast<size_t>(layer)] += rows.size(0);
    if (layer == 0) count_[m] += rows.size(0);
  }
}

at::Tensor CovarianceObserver::covariance(int64_t layer, Modality m) const {
  const int i = static_cast<int>(m);
  const int64_t n = layer_count_[i].at(static_cast<size_t>(layer));
  if (n == 0) return {};
  return sum_[i][static_cast<size_t>(layer)] / static_cast<double>(n);
}

at::Tensor CovarianceObserver::covariance_all(int64_t layer) const {
  const int64_t n = layer_count_[0].at(static_cast<size_t>(layer)) + layer_count_[1].at(static_cast<size_t>(layer));
  if (n == 0) return {};
  return (sum_[0][static_cast<size_t>(layer)] + sum_[1][static_cast<size_t>(layer)]) / static_cast<double>(n);
}

}  // namespace vlm2mla::convert
