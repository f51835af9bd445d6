set terminal pngcairo size 1250,640 font 'Sans,11'
set output "docs/plots/session34_wgmma_probe_h200_2026-12-01_s34.png"
set title "The warpgroup-MMA probe's grid at 8 x 32k (bf16 tiles, 16 splits a sequence, TMA copies), H200, session 34: keys a second" noenhanced
set grid ytics
set key at graph 0.98, graph 0.85 right noenhanced
set bmargin 5
set yrange [0:28]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel 'G keys / s (a key: 512 B of bf16 latent and RoPE key)'
set xtics noenhanced
# WgmmaProbe.DISABLED_GridBandwidth, span 2048, docs/bench/wgmma_grid_rate_call8_transposed_h200_2026-12-01_s34.log
# (the first grid, call 3: docs/bench/wgmma_grid_rate_call3_two_consumers_h200_2026-12-01_s34.log, cp.async).
# "consumers idle": the producer's pace alone; "producer idle": the consumers' pace alone (tiles never copied).
# Lines: the warp-rows kernel (main) at b = 256 x 32k, bf16 7.7 and int4 6.5 G keys/s (KERNELS.md, session 33);
# int4 at the copy rate (160 B a key, 4.25 TB/s) 26.6 G keys/s.
set arrow from graph 0, first 7.7 to graph 1, first 7.7 nohead dt 2 lw 2 lc rgb "#1f77b4"
set label "warp-rows kernel, bf16 (7.7)" at graph 0.005, first 8.3 tc rgb "#1f77b4"
set arrow from graph 0, first 6.5 to graph 1, first 6.5 nohead dt 3 lw 2 lc rgb "#d62728"
set label "warp-rows kernel, int4 (6.5)" at graph 0.005, first 5.2 tc rgb "#d62728"
set arrow from graph 0, first 26.6 to graph 1, first 26.6 nohead dt 2 lw 2 lc rgb "#2ca02c"
set label "int4 at the copy rate (26.6)" at graph 0.005, first 25.8 tc rgb "#2ca02c"
$data << EOD
case "whole grid" "producer alone (consumers idle)" "consumers alone (producer idle)"
"joint 64 rows\n1 consumer\nfirst (cp.async)" 2.89 6.74 3.67
"joint 64 rows\n1 consumer\nlean step" 4.91 6.38 6.87
"joint 64 rows\n2 consumers" 5.84 6.61 9.11
"transposed\ntext rows\n1 consumer" 5.25 6.81 7.78
"transposed\ntext rows\n2 consumers" 5.93 6.63 9.45
EOD
plot $data using 2:xtic(1) title columnheader, $data using 3:xtic(1) title columnheader, $data using 4:xtic(1) title columnheader
