set terminal pngcairo size 1250,640 font 'Sans,11'
set output "docs/plots/session37_wgmma_kernel_h200_2026-12-02_s37.png"
set title "The wgmma decode kernel over int4 stores against the warp-rows kernel, H200, 32k keys a sequence (4k: last group): time a call, ratio" noenhanced
set grid ytics
set key top left noenhanced
set bmargin 5
set yrange [0.6:1.3]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel 'wgmma kernel time / warp-rows kernel time (below 1: faster)'
set xtics noenhanced
# MlaDecodeCuda.DISABLED_Bandwidth rows, default layout (2 producers, 2 consumers). Session 36: bf16 operands,
# docs/bench/wgmma_kernel_bandwidth_call6_h200_2026-12-02_s36.log. Session 37, fp16 operands alone: call 1's first
# build beside its warp-rows rows (docs/bench/wgmma_fp16_lazy_call1_h200_2026-12-02_s37.log; the cases it ran).
# Session 37, fp16 operands and the lazy max (main, kAuto's since): call 7's rows over call 6's warp-rows rows, the
# same machine a minute apart (docs/bench/wgmma_coalesced_producer_calls6-7_h200_2026-12-02_s37.log; the warp-rows
# kernel's text b = 256 row 1,152.7 in call 6, 1,165.9 in call 7). Qwen2.5-VL-7B sizes, D = 32, groups of 64, a
# 128-position window; "one set": n_mod 1, random keys; "text": two sets over text; "prompt2304": one 2,304-token
# image a context; "runs": alternating runs of 576.
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2 lc rgb "#444444"
$data << EOD
case "session 36: bf16 operands" "session 37: fp16 operands" "session 37: fp16 operands + lazy max (kAuto's)"
"one set\nb = 1" 0.746 0.770 0.774
"one set\nb = 8" 0.996 NaN 0.840
"one set\nb = 32" 1.120 NaN 0.878
"one set\nb = 256" 0.996 0.935 0.783
"text\nb = 8" 0.924 NaN 0.821
"text\nb = 32" 1.080 1.030 0.872
"text\nb = 256" 0.972 0.935 0.787
"text\nb = 768" 0.984 0.923 0.766
"prompt2304\nb = 32" 0.986 NaN 0.812
"prompt2304\nb = 256" 1.031 0.980 0.825
"runs\nb = 32" 1.014 NaN 0.872
"4k, one set\nb = 1" NaN NaN 0.873
EOD
plot $data using 2:xtic(1) title columnheader, $data using 3:xtic(1) title columnheader, $data using 4:xtic(1) title columnheader
