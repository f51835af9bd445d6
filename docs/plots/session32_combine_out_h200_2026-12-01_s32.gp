set terminal pngcairo size 1200,620 font 'Sans,11'
set output "docs/plots/session32_combine_out_h200_2026-12-01_s32.png"
set title "Decode steps with the combine's output product over those with the head product after it (on / off), Qwen2.5-VL-7B shapes, D = 32, H200, session 32" noenhanced
set grid ytics
set key top left noenhanced
set yrange [0.93:1.04]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel 'step time on / off (below 1: on is faster)'
set xtics noenhanced
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2
# VLM2MLA_DECODE_COMBINE_OUT=1 (on) and =0 (off), the same binary (main 5e4b0df), 32 tokens a run, 2-5 runs each:
# docs/bench/combine_out_{0,1}_{b1b8,b1b2b4,b3}_run*_h200_2026-12-01_s32.jsonl and
# b8_sweep_{default,combine_out_0}_run*_h200_2026-12-01_s32.jsonl. Main since 5a11684: on for 1 to 3 sequences.
$data << EOD
case "MLA D=32 bf16" "MLA D=32 int4"
"4k x 1" 0.987 0.991
"16k x 1" 0.983 0.976
"32k x 2" 0.953 0.963
"16k x 3" 0.986 0.997
"32k x 3" 1.003 0.965
"32k x 4" 1.019 1.013
"16k x 8" 1.008 1.008
"32k x 8" 1.011 1.008
EOD
plot $data using 2:xtic(1) title columnheader, $data using 3:xtic(1) title columnheader
