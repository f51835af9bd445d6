set terminal pngcairo size 1000,600 font 'Sans,11'
set output "docs/plots/combine_out_steps_h200_2026-11-30_s27.png"
set title "MLA D = 32 decode step, Qwen2.5-VL-7B shapes, H200: the output product in the combine or apart (ms, lower is better)" noenhanced
set grid ytics
set key top left noenhanced
set yrange [0:8]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel 'ms per decode step (mean of the runs medians)'
set xtics rotate by -30 noenhanced
$data << EOD
shape "head product apart (VLM2MLA_DECODE_COMBINE_OUT=0)" "in the combine (=1)" "1.3x the floor (goal)"
"4k x 1 mla:32:bf16" 4.643 4.551 4.404
"4k x 1 mla:32:int4" 4.712 4.649 4.356
"16k x 1 mla:32:bf16" 4.720 4.644 4.435
"16k x 1 mla:32:int4" 4.959 4.895 4.413
"32k x 1 mla:32:bf16" 4.947 4.851 4.525
"32k x 1 mla:32:int4" 5.080 4.962 4.400
"32k x 8 mla:32:bf16" 6.390 6.187 5.541
"32k x 8 mla:32:int4" 6.580 6.467 4.721
EOD
plot $data using 2:xtic(1) title columnheader, $data using 3:xtic(1) title columnheader, $data using 4:xtic(1) title columnheader
