# LLaVA-1.5-7B decode steps on the scores-first kernels (MLA d_kv 32 and 64: r_kv 1,024 and 2,048), H200, 2026-11-29
# (session 17): at f9f2007 (call 1) against a7c95c5 (call 5: the passes' units addressed once, the scores pass's
# epilogue a head a thread, int4 dequantized in bf16 pairs, the values pass's column parts sharing a tile's softmax),
# with the MHA model's step (call 5) beside them. Data: docs/bench/decode_llava_{before,after}_h200_2026-11-29_s17.jsonl
# (median ms a step). Render: gnuplot docs/plots/decode_llava_wide_h200_2026-11-29_s17.gp
set terminal pngcairo size 1000,560 font "DejaVu Sans,11" noenhanced
set output "docs/plots/decode_llava_wide_h200_2026-11-29_s17.png"
set title "LLaVA-1.5-7B on the scores-first kernels: decode step before / after session 17 (H200, median ms; lower is better)"
set style data histogram
set style histogram clustered gap 1.5
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel "ms per decode step"
set yrange [0:*]
set grid ytics
set key top left
set xtics nomirror
$data << EOD
"4k x 1" 6.95 6.74 8.16 7.67 7.89 7.51 5.56
"16k x 1" 8.12 7.83 9.12 8.93 9.80 9.03 7.08
"16k x 8" 19.33 16.37 24.96 21.62 28.06 23.42 20.52
EOD
plot $data using 2:xtic(1) title "d_kv 32 bf16 before" lc rgb "#9ecae1", \
     '' using 3 title "d_kv 32 bf16 after" lc rgb "#3182bd", \
     '' using 4 title "d_kv 32 int4 before" lc rgb "#fdae6b", \
     '' using 5 title "d_kv 32 int4 after" lc rgb "#e6550d", \
     '' using 6 title "d_kv 64 bf16 before" lc rgb "#a1d99b", \
     '' using 7 title "d_kv 64 bf16 after" lc rgb "#31a354", \
     '' using 8 title "MHA model" lc rgb "#636363"
