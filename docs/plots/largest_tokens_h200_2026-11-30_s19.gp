set terminal pngcairo size 1000,600 font 'Sans,11'
set output "docs/plots/largest_tokens_h200_2026-11-30_s19.png"
set title "decode tokens/s (batch / median step; higher is better)" noenhanced
set grid
set key outside right noenhanced
set yrange [0:*]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel 'decode tokens/s'
set xlabel 'context x batch'
$data << EOD
shape "gqa" "mla:32:bf16" "mla:32:int4"
"32k x 64" 1961.730440 NaN NaN
"32k x 256" NaN 6091.401238 NaN
"32k x 768" NaN NaN 6240.322371
EOD
plot $data using 2:xtic(1) title columnheader, $data using 3:xtic(1) title columnheader, $data using 4:xtic(1) title columnheader
