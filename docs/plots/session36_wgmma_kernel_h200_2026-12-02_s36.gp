set terminal pngcairo size 1250,640 font 'Sans,11'
set output "docs/plots/session36_wgmma_kernel_h200_2026-12-02_s36.png"
set title "The wgmma decode kernel over int4 stores against the warp-rows kernel (kAuto), H200, 32k keys a sequence, session 36: time a call, ratio" noenhanced
set grid ytics
set key top left noenhanced
set bmargin 5
set yrange [0.6:1.6]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel 'wgmma kernel time / warp-rows kernel time (below 1: faster)'
set xtics noenhanced
# MlaDecodeCuda.DISABLED_Bandwidth rows, docs/bench/wgmma_kernel_bandwidth_call6_h200_2026-12-02_s36.log
# (WGMMA_TESTS='-*DISABLED*' bash scripts/device/wgmma.sh; main e19ac48). Qwen2.5-VL-7B sizes, D = 32, groups of 64,
# a 128-position window; "one set": n_mod 1, random keys; "text": two sets over text; "prompt2304": one 2,304-token
# image a context; "runs": alternating runs of 576.
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2 lc rgb "#444444"
$data << EOD
case "1 producer, 2 consumers" "1 producer, 3 consumers" "2 producers, 2 consumers (default)"
"one set\nb = 1" 0.739 0.801 0.746
"one set\nb = 8" 1.021 1.023 0.996
"one set\nb = 32" 1.196 1.176 1.120
"one set\nb = 256" 1.071 1.063 0.996
"text\nb = 8" 0.966 0.967 0.924
"text\nb = 32" 1.169 1.139 1.080
"text\nb = 256" 1.055 1.035 0.972
"text\nb = 768" 1.069 1.048 0.984
"prompt2304\nb = 32" 1.047 1.060 0.986
"prompt2304\nb = 256" 1.111 1.117 1.031
"runs\nb = 32" 1.283 1.288 1.014
EOD
plot $data using 2:xtic(1) title columnheader, $data using 3:xtic(1) title columnheader, $data using 4:xtic(1) title columnheader
