set terminal pngcairo size 1200,620 font 'Sans,11'
set output "docs/plots/session31_gemm_rows_h200_2026-12-01_s31.png"
set title "Decode step at 32k x 8, Qwen2.5-VL-7B shapes, H200, session 31: projections of 8 rows on cuBLAS or on our kernel (ms, lower is better)" noenhanced
set grid ytics
set key top right noenhanced
set yrange [0:10]
set datafile missing "NaN"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel 'ms per decode step (mean of the runs medians)'
set xtics noenhanced
# cuBLAS and "CTAs end": call 2, two runs each (gemm_rows_grid_{rows0,late}{,_run2}_h200_2026-12-01_s31.jsonl);
# "after the wait": MLA bf16 call 1 (gemm_rows_trigger_early_h200_2026-12-01_s31.jsonl), GQA session 30 call 5
# (gemm_rows_1_h200_2026-12-01_s30.jsonl), int4 not measured so; 1.3x: the runs' mean floor
$data << EOD
variant "cuBLAS (at::linear, split-K)" "kernel, next launch after its wait" "kernel, next launch as CTAs end (merged)" "1.3x the floor (goal)"
"GQA" 8.144 7.61 7.658 9.124
"MLA D=32 bf16" 6.111 7.623 5.881 5.568
"MLA D=32 int4" 6.377 NaN 6.113 4.762
EOD
plot $data using 2:xtic(1) title columnheader, $data using 3:xtic(1) title columnheader, $data using 4:xtic(1) title columnheader, $data using 5:xtic(1) title columnheader
