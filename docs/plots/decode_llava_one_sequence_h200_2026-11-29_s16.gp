# LLaVA-1.5-7B decode steps at one sequence, H200, 2026-11-29 (session 16): the previous defaults
# (VLM2MLA_DECODE_COMBINE=block, VLM2MLA_DECODE_MIN_TILES=1) against this session's (kAuto: column-chunk combine
# below a quarter wave, 4 tiles a split for the scores-first kernels). Data: docs/bench/decode_llava_one_sequence_
# {before,after}_h200_2026-11-29_s16.jsonl (median ms a step). Render: gnuplot docs/plots/decode_llava_one_sequence_h200_2026-11-29_s16.gp
set terminal pngcairo size 1000,560 font "DejaVu Sans,11" noenhanced
set output "docs/plots/decode_llava_one_sequence_h200_2026-11-29_s16.png"
set title "LLaVA-1.5-7B, one sequence: decode step before / after this session's defaults (H200, median ms; lower is better)"
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
"MHA" 5.60 5.66 7.04 7.02
"d_kv 16 bf16" 6.79 6.65 7.98 7.09
"d_kv 32 bf16" 7.79 6.93 8.49 8.07
"d_kv 32 int4" 8.84 8.17 9.57 9.12
"d_kv 64 bf16" 8.80 8.13 10.37 9.64
"d_kv 64 int4" 10.45 9.85 12.06 11.71
EOD
plot $data using 2:xtic(1) title "4k x 1 before" lc rgb "#9ecae1", \
     '' using 3 title "4k x 1 after" lc rgb "#3182bd", \
     '' using 4 title "16k x 1 before" lc rgb "#fdae6b", \
     '' using 5 title "16k x 1 after" lc rgb "#e6550d"
