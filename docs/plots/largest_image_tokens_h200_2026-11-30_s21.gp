set terminal pngcairo size 1000,600 font 'Sans,11'
set output "docs/plots/largest_image_tokens_h200_2026-11-30_s21.png"
set title "decode tokens/s (batch / median step; higher is better)" noenhanced
set grid
set key outside right noenhanced
set yrange [0:*]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set bmargin 6
set xtics offset 0,-0.3
set ylabel 'decode tokens/s'
set xlabel 'context x batch' offset 0,-1
$data << EOD
shape "gqa" "mla:32:bf16" "mla:32:int4"
"32k x 64\n+1344x1344" 1997.446140 NaN NaN
"32k x 256\n+1344x1344" NaN 5889.340850 NaN
"32k x 768\n+1344x1344" NaN NaN 5750.981598
EOD
plot $data using 2:xtic(1) title columnheader, $data using 3:xtic(1) title columnheader, $data using 4:xtic(1) title columnheader
