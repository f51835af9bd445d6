set terminal pngcairo size 1250,640 font 'Sans,11'
set output "docs/plots/session38_wgmma_producer_h200_2026-12-02_s38.png"
set title "The wgmma decode kernel (int4, 2 producer + 2 consumer warpgroups), H200, 32k keys a sequence (4k: last group): time against session 37's" noenhanced
set grid ytics
set key top left noenhanced
set bmargin 5
set yrange [0.85:1.15]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel 'time / session 37 kernel time (below 1: faster)'
set xtics noenhanced
# MlaDecodeCuda.DISABLED_Bandwidth rows, µs a call. Session 37's kernel (main 1135939) and its pipelined step:
# session 38 call 1, one build (docs/bench/wgmma_pipeline_call1_h200_2026-12-02_s38.log). The producer's fewer
# instructions (one LOP3 a pair, pointer steps, scale pairs in one word): call 3 (docs/bench/
# wgmma_producer_calls2-3_h200_2026-12-02_s38.log). Plus three register sets in turn (main c9f23ef): call 6
# (docs/bench/wgmma_final_call6_h200_2026-12-02_s38.log). Calls 1, 3 and 6 ran on fresh machines; the warp-rows
# kernel's unchanged rows agreed within 0.7% between calls 1 and 3, and call 4 timed the loop's forms in one build
# (docs/bench/wgmma_producer_unroll_call4_h200_2026-12-02_s38.log). Qwen2.5-VL-7B sizes, D = 32, groups of 64, a
# 128-position window; "one set": n_mod 1; "text": two sets over text; "prompt2304": one 2,304-token image a
# context; "runs": alternating runs of 576.
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2 lc rgb "#444444"
$data << EOD
case "pipelined step (removed)" "fewer producer instructions (call 3)" "+ three register sets in turn (main, call 6)"
"one set\nb = 1" 1.121 1.004 1.009
"one set\nb = 8" 1.009 0.972 0.972
"one set\nb = 32" 1.029 0.964 0.942
"one set\nb = 256" 1.051 0.967 0.956
"text\nb = 8" 1.013 0.972 0.968
"text\nb = 32" 1.036 0.961 0.954
"text\nb = 256" 1.046 0.962 0.955
"text\nb = 768" 1.042 0.964 0.953
"prompt2304\nb = 32" 1.062 0.964 0.952
"prompt2304\nb = 256" 1.039 0.954 0.939
"runs\nb = 32" 1.014 0.940 0.919
"4k, one set\nb = 1" 1.076 1.006 1.025
EOD
plot $data using 2:xtic(1) title columnheader, $data using 3:xtic(1) title columnheader, $data using 4:xtic(1) title columnheader
