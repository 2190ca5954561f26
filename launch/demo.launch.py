"""Demo without a camera: generated scenes -> SparseInst node -> rviz2.

    ros2 launch sparseinst_ros demo.launch.py
    ros2 launch sparseinst_ros demo.launch.py rviz:=false device:=cpu
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, SetEnvironmentVariable
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE_SHARE = FindPackageShare('sparseinst_ros')


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            'device', default_value='auto', choices=['auto', 'cuda', 'cpu'],
            description='inference device'),
        DeclareLaunchArgument(
            'rviz', default_value='true', choices=['true', 'false'],
            description='start rviz2 showing the generated image and the overlay'),
        DeclareLaunchArgument(
            'fastdds_profiles_file',
            default_value=PathJoinSubstitution([PACKAGE_SHARE, 'config', 'fastdds_large_data.xml']),
            description='Fast DDS XML profile for all processes started here (large-image transport)'),

        # Before the image source starts; the included launch file sets the same for its processes.
        SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', LaunchConfiguration('fastdds_profiles_file')),

        # Publishes generated scenes on `image`, which is the node's default input.
        Node(
            package='sparseinst_ros',
            executable='image_source',
            name='image_source',
            output='screen',
        ),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(
                PathJoinSubstitution([PACKAGE_SHARE, 'launch', 'sparseinst.launch.py'])),
            launch_arguments={
                'image_topic': 'image',
                'camera': 'none',
                'device': LaunchConfiguration('device'),
                'rviz': LaunchConfiguration('rviz'),
                'fastdds_profiles_file': LaunchConfiguration('fastdds_profiles_file'),
            }.items(),
        ),
    ])
