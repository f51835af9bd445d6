set terminal pngcairo size 1300,660 font 'Sans,11'
set output "docs/plots/session41_wgmma_one_barrier_h200_2026-12-02_s41.png"
set title "wgmma decode kernel (int4): one warpgroup barrier a tile, raw scores, 32-bit descriptor words; H200, 32k keys a sequence (4k: last group)" noenhanced
set grid ytics
set key top center horizontal noenhanced maxrows 2
set bmargin 5
set yrange [0.95:1.09]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel 'time / the kernel before, same call (below 1: faster)'
set xtics noenhanced
# MlaDecodeCuda.DISABLED_Bandwidth rows, us a call (docs/bench/wgmma_one_barrier_ab_calls1-7_h200_2026-12-02_s41.txt):
# scripts/device/bandwidth_ab.sh, each build against 8a8a139 built and timed in the same call. "first try": one
# barrier a tile (the weights written before it, the lazy max's vote carried by it; P^T in two buffers), the scores
# raw, 64-bit descriptors; "P^T beside the tile": the same with each P^T next to its latent tile; "vote first": the
# vote's barrier before the weights (two a tile); call 5 adds the descriptors as two 32-bit words to both, and times
# those words alone on the kernel before. "main" is eff90a7's kernel. Qwen2.5-VL-7B sizes, D = 32, groups of 64.
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2 lc rgb "#444444"
$data << EOD
case "first try (call 1)" "P^T beside the tile (call 3)" "vote first (call 3)" "main: + 32-bit descriptors (call 5)" "vote first + 32-bit (call 5)" "32-bit descriptors alone (call 5)"
"one set\nb = 1 (2p2c)" 1.014 1.009 1.009 1.014 1.014 1.009
"one set\nb = 8" 1.032 1.016 1.008 1.008 1.016 1.011
"one set\nb = 32" 1.061 1.037 1.022 1.012 1.017 1.009
"one set\nb = 256" 1.071 1.046 1.029 0.994 1.016 0.992
"text\nb = 8" 1.039 1.029 1.019 1.007 1.027 1.005
"text\nb = 32" 1.060 1.036 1.031 1.009 1.019 1.006
"text\nb = 256" 1.061 1.041 1.041 0.986 1.028 1.002
"text\nb = 768" 1.062 1.026 1.040 0.982 1.023 0.996
"prompt2304\nb = 32" 1.066 1.044 1.035 0.991 1.013 0.984
"prompt2304\nb = 256" 1.058 1.024 1.036 0.972 1.006 0.976
"runs\nb = 32" 1.029 1.006 1.020 0.991 0.992 0.991
"4k, one set\nb = 1 (2p2c)" 1.013 1.020 1.013 1.013 1.020 1.000
EOD
plot for [i=2:7] $data using i:xtic(1) title columnheader
