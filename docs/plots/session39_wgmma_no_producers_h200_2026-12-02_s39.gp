set terminal pngcairo size 1250,640 font 'Sans,11'
set output "docs/plots/session39_wgmma_no_producers_h200_2026-12-02_s39.png"
set title "wgmma decode kernel (int4): no producer warpgroups (0p2c) against 2 producers + 2 consumers (2p2c), H200, 32k keys a sequence (4k: last group)" noenhanced
set grid ytics
set key top left noenhanced
set bmargin 5
set yrange [0.8:1.15]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel '0p2c time / 2p2c time (below 1: faster)'
set xtics noenhanced
# MlaDecodeCuda.DISABLED_Bandwidth rows, µs a call, both layouts in one build and call (docs/bench/
# wgmma_regA_kernel_calls1-4_h200_2026-12-02_s39.log, wgmma_regA_final_calls5-7_h200_2026-12-02_s39.log). Call 1:
# the consumers' latent tile by STS.128 (32 register moves a tile), the loop unrolled by two. Call 2: the latent tile
# by stmatrix from the A operands' registers, the loop with one register set copied (a temporary switch, the
# unrolled loop timed in the same call). Main: call 6's 0p2c (the first tile's loads before the queries) against
# call 4's 2p2c, the same machine (calls 4-6 ran warm on one). Qwen2.5-VL-7B sizes, D = 32, groups of 64, a
# 128-position window; "one set": n_mod 1; "text": two sets over text; "prompt2304": one 2,304-token image a
# context; "runs": alternating runs of 576. kAuto takes 0p2c from two sequences, 2p2c at one.
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2 lc rgb "#444444"
$data << EOD
case "STS.128, unrolled (call 1)" "stmatrix, one set copied (call 2)" "main (call 6 against call 4)"
"one set\nb = 1" 1.018 1.040 1.018
"one set\nb = 8" 0.969 0.945 0.943
"one set\nb = 32" 0.942 0.871 0.882
"one set\nb = 256" 0.932 0.867 0.880
"text\nb = 8" 0.971 0.930 0.925
"text\nb = 32" 0.945 0.883 0.885
"text\nb = 256" 0.943 0.878 0.889
"text\nb = 768" 0.953 0.868 0.880
"prompt2304\nb = 32" 0.950 0.903 0.914
"prompt2304\nb = 256" 0.969 0.912 0.904
"runs\nb = 32" 1.012 0.989 0.988
"4k, one set\nb = 1" 1.051 1.057 1.069
EOD
plot $data using 2:xtic(1) title columnheader, $data using 3:xtic(1) title columnheader, $data using 4:xtic(1) title columnheader
